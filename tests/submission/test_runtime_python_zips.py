"""Packed zips on the runtime's real versions: Python 3.9, torch 1.8.0, smp 0.2.1, numpy 1.20.

A packed student (the default 492,809-parameter U-Net with its space-to-depth stem, flips
TTA, on the fast path: oneDNN on torch 1.8) and a packed smp U-Net
(MobileNetV2 encoder) run through ``run-local`` twice: on this interpreter (today's torch)
and on the runtime Python built by ``oncloudn runtime-env install-python``; their masks must
agree. Each zip's threshold is set to the median cloud probability that today's stack gives
on the chips, so about half of all pixels sit near it and any numerical drift between the
stacks shows. Runs on the real unlabelled On Cloud N chips of ``../shared/data`` when present,
else on generated chips. Skips, with the reason, only where no runtime Python was built (no
Python 3.9 on the machine).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from toydata import write_toy_dataset

from oncloudn.config.distill import STUDENT_ARGS
from oncloudn.models.folder import save_model_folder
from oncloudn.runtime.chipio import read_bands
from oncloudn.runtime.loader import load_model
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.networks import build_network
from oncloudn.submission.pack import pack_submission
from oncloudn.submission.run_local import run_local
from oncloudn.submission.runtime_env import runtime_python, runtime_smp_dir

REAL_CHIPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "oncloudn-real-unlabeled"
# Pixels whose mask may differ between the two stacks (float summation order differs).
MAX_DIFFERING_FRACTION = 5e-4


@pytest.fixture(scope="module")
def python39() -> str:
    python = runtime_python()
    if python is None:
        pytest.skip(
            "no runtime Python 3.9 + torch 1.8 environment: run `oncloudn runtime-env "
            "install-python` (needs a Python 3.9, e.g. from pyenv)"
        )
    if runtime_smp_dir() is None:
        pytest.skip("the runtime's smp 0.2.1 is not installed (`oncloudn runtime-env install`)")
    return python


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runtime-style data root: the real chips when present, else generated ones."""
    root = tmp_path_factory.mktemp("data")
    if (REAL_CHIPS / "train_features").is_dir():
        (root / "test_features").symlink_to(REAL_CHIPS / "train_features")
        shutil.copy(REAL_CHIPS / "train_metadata.csv", root / "test_metadata.csv")
        return root
    ids = ["0000", "abcd", "efgh", "ijkl"]
    return write_toy_dataset(root / "toy", ids, ["A", "A", "B", "B"], split="test", seed=5)


def _chip_ids(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "test_features").iterdir() if p.is_dir())


def _median_probability(folder: Path, root: Path) -> float:
    model = load_model(str(folder))
    probabilities = []
    for chip_id in _chip_ids(root):
        raw = read_bands(str(root / "test_features" / chip_id), model.bands)
        probabilities.append(model.predict_proba(torch.from_numpy(raw[None].astype("float32"))))
    return float(torch.cat(probabilities).median())


def _model_folder(folder: Path, network: str, args: dict, normalization: str, seed: int) -> Path:
    torch.manual_seed(seed)
    manifest = Manifest(
        name=folder.name,
        architecture={"name": network, "args": args},
        normalization={"name": normalization, "params": {}},
    )
    return save_model_folder(folder, manifest, state_dict=build_network(network, args, 4, 1))


def _masks(predictions: Path) -> dict[str, np.ndarray]:
    return {p.stem: tifffile.imread(p) for p in sorted(predictions.iterdir())}


@pytest.mark.parametrize(
    "network, args, normalization",
    [
        ("unet", STUDENT_ARGS, "reflectance"),
        ("smp", {"arch": "Unet", "encoder_name": "mobilenet_v2"}, "zscore_chip"),
    ],
    ids=["student-unet", "smp-mobilenet_v2"],
)
def test_zip_masks_match_on_the_runtime_versions(
    python39: str, data_root: Path, tmp_path: Path, network: str, args: dict, normalization: str
) -> None:
    folder = _model_folder(tmp_path / network, network, args, normalization, seed=7)
    threshold = _median_probability(folder, data_root)
    zip_path = pack_submission([folder], tmp_path / "s.zip", tta="flips", threshold=threshold)
    today = run_local(zip_path.path, data_root, tmp_path / "today", python=sys.executable)
    runtime = run_local(zip_path.path, data_root, tmp_path / "runtime", python=python39)
    for result in (today, runtime):
        assert result.passed, result.problems
        info = json.loads(result.run_json.read_text())
        assert info["main_summary"]["n_fallback"] == 0, info["main_summary"]
    runtime_info = json.loads(runtime.run_json.read_text())
    assert runtime_info["python"].startswith("3.9")
    if network == "unet":  # the student runs on torch 1.8's oneDNN fast path
        assert runtime_info["main_summary"]["fast_layout"] == "mkldnn", runtime_info

    log = (tmp_path / "runtime" / "main.log").read_text()
    assert "torch 1.8.0" in log, log[:2000]
    ours, theirs = _masks(today.predictions_dir), _masks(runtime.predictions_dir)
    assert sorted(ours) == sorted(theirs) == _chip_ids(data_root)
    cloud = np.mean([mask.mean() for mask in ours.values()])
    assert 0.2 < cloud < 0.8, cloud  # the median threshold makes the masks non-trivial
    differing = sum(int((ours[c] != theirs[c]).sum()) for c in ours)
    total = sum(mask.size for mask in ours.values())
    print(f"{network}: {differing} of {total} mask pixels differ between the stacks")
    assert differing <= MAX_DIFFERING_FRACTION * total, f"{differing} of {total} pixels differ"

"""main.py under the runtime's real versions (Python 3.9, torch 1.8, numpy 1.20, smp 0.2.1).

Uses the environment of ``oncloudn runtime-env install-python`` (or the interpreter named by
``ONCLOUDN_RUNTIME_PYTHON``); skips with the reason where none was built (no Python 3.9).

An ensemble folder (a UNet, an smp Unet-ResNet34 and the threshold rule; d4 TTA and every
post-processing step on) is saved with today's torch, vendored as in submission.zip and run
there; its masks must equal those of today's stack (up to a few pixels at the threshold).
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from rt_folders import make_threshold_folder, make_unet_folder, make_vendored_code

from oncloudn.runtime.loader import load_model
from oncloudn.runtime.manifest import ChipRules, Manifest, PostprocessSpec, write_manifest
from oncloudn.runtime.networks import build_network
from oncloudn.runtime.predict import predict_chips
from oncloudn.submission.runtime_env import runtime_python


def _ensemble(folder: Path) -> Path:
    make_unet_folder(folder / "unet", seed=3)
    make_threshold_folder(folder / "rule")
    torch.manual_seed(4)
    network = build_network("smp", {"arch": "Unet", "encoder_name": "resnet34"}, 4, 1).eval()
    smp_manifest = Manifest(
        name="smp",
        architecture={"name": "smp", "args": {"arch": "Unet", "encoder_name": "resnet34"}},
        normalization={"name": "zscore_chip", "params": {}},
    )
    write_manifest(str(folder / "smp"), smp_manifest)
    torch.save(network.state_dict(), folder / "smp" / "weights.pt")
    members = [{"path": p, "weight": w} for p, w in (("unet", 1), ("smp", 1), ("rule", 2))]
    manifest = Manifest(
        name="ensemble",
        kind="ensemble",
        weights=None,
        members=members,
        tta=["d4"],
        threshold=0.4,
        postprocess=PostprocessSpec(1.0, 1, 2, 1, 1, 30, 30),
        chip_rules=ChipRules(0.001, 0.999),
    )
    write_manifest(str(folder), manifest)
    return folder


def test_main_under_the_runtime_interpreter(toy_root: Path, tmp_path: Path) -> None:
    python = runtime_python()
    if python is None:
        pytest.skip("no runtime Python: run `oncloudn runtime-env install-python` (needs 3.9)")
    (toy_root / "train_features").rename(toy_root / "test_features")
    features = toy_root / "test_features"
    (features / "abcd" / "B08.tif").unlink()
    for chip_id in ("ijkl", "mnop", "qrst"):  # three chips keep the default run short
        shutil.rmtree(features / chip_id)
    zip_root = make_vendored_code(tmp_path / "codeexecution")
    _ensemble(zip_root / "model")
    expected = tmp_path / "expected"
    predict_chips(load_model(str(zip_root / "model")), str(features), str(expected))
    predictions = tmp_path / "predictions"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONCLOUDN_", "PYTHON"))}
    env.update(ONCLOUDN_DATA_DIR=str(toy_root), ONCLOUDN_PREDICTIONS_DIR=str(predictions))
    result = subprocess.run(
        [python, "main.py", "--device", "cpu"],
        cwd=str(zip_root),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "torch 1.8" in result.stderr, result.stderr[:2000]
    assert sorted(os.listdir(predictions)) == sorted(os.listdir(expected))
    fractions = [tifffile.imread(expected / name).mean() for name in os.listdir(expected)]
    assert any(0.01 < fraction < 0.99 for fraction in fractions), fractions  # not trivial
    for name in os.listdir(expected):
        ours, theirs = tifffile.imread(expected / name), tifffile.imread(predictions / name)
        assert theirs.dtype == np.uint8 and theirs.shape == (512, 512)
        assert (ours != theirs).sum() <= 20, name

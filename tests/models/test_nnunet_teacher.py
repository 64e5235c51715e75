"""nnU-Net v2: export layout, splits through nnU-Net's own loader, teacher parity, allowlist.

The parity test trains a tiny nnU-Net with nnunetv2 itself (``nnunet_child.py``: plan and
preprocess six exported 64 x 64 chips, folds 0 and 1 for one epoch of two iterations on the
CPU) and compares our ``nnunet`` kind's cloud probabilities with ``nnUNetPredictor``'s.
Those tests skip only where nnunetv2 is not installed (``pip install .[nnunet]``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from toydata import write_toy_dataset

from oncloudn.cli.main import main as cli_main
from oncloudn.data.folds import load_folds
from oncloudn.data.nnunet_export import export_nnunet_dataset, nnunet_splits
from oncloudn.errors import ConfigError, DataError
from oncloudn.models.folder import load_model_folder
from oncloudn.models.nnunet_network import TrainedModel, build_network, load_checkpoint
from oncloudn.runtime.chipio import read_bands

CHILD = Path(__file__).with_name("nnunet_child.py")
REPO = Path(__file__).resolve().parents[2]
CHIP_IDS = ["a0", "a1", "b0", "b1", "c0", "c1"]
LOCATIONS = ["A", "A", "B", "B", "C", "C"]
DATASET = "Dataset017_Tiny"
needs_nnunet = pytest.mark.skipif(
    importlib.util.find_spec("nnunetv2") is None,
    reason="nnunetv2 is not installed (pip install .[nnunet])",
)


def _toy_root(folder: Path) -> Path:
    root = write_toy_dataset(folder, CHIP_IDS, LOCATIONS, size=64)
    path = root / "train_labels" / "a1.tif"
    with rasterio.open(path) as source:
        label, profile = source.read(1), source.profile
    label[:4] = 255  # nodata rows: nnU-Net's ignore label
    with rasterio.open(path, "w", **profile) as target:
        target.write(label, 1)
    return root


def _chips(root: Path) -> dict[str, np.ndarray]:
    """A chip as is, with a nodata border, larger than the 64 patch, and smaller."""
    first = read_bands(str(root / "train_features" / "a0")).astype(np.float32)
    second = read_bands(str(root / "train_features" / "b0")).astype(np.float32)
    border = first.copy()
    border[:, :7] = 0
    border[:, :, -5:] = 0
    rows = [np.concatenate([first, second], 2), np.concatenate([second, first], 2)]
    big = np.concatenate(rows, 1)
    return {"plain": first, "border": border, "big": big[:, :96, :80], "small": first[:, :48, :40]}


@pytest.fixture(scope="module")
def nnunet_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Export, then nnunetv2 plans, trains two folds and predicts in a child process."""
    if importlib.util.find_spec("nnunetv2") is None:
        pytest.skip("nnunetv2 is not installed (pip install .[nnunet])")
    base = tmp_path_factory.mktemp("nnunet")
    root = _toy_root(base / "data")
    summary = export_nnunet_dataset(root, base / "raw", 17, name="Tiny", n_folds=3)
    chips = _chips(root)
    np.savez(base / "chips.npz", **chips)
    env = {
        **os.environ,
        "nnUNet_raw": str(base / "raw"),
        "nnUNet_preprocessed": str(base / "pre"),
        "nnUNet_results": str(base / "res"),
        "nnUNet_n_proc_DA": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, str(CHILD), "17", str(base / "chips.npz"), str(base / "out.npz")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with np.load(base / "out.npz") as out:
        results = {key: out[key] for key in out.files}
    return {"base": base, "root": root, "summary": summary, "chips": chips, "out": results}


def test_export_layout(tmp_path: Path) -> None:
    root = _toy_root(tmp_path / "data")
    summary = export_nnunet_dataset(root, tmp_path / "raw", 17, name="Tiny", n_folds=3)
    folder = tmp_path / "raw" / DATASET
    assert summary.folder == folder and summary.chips == 6 and summary.ignore_label == 2
    images = sorted(p.name for p in (folder / "imagesTr").iterdir())
    assert images == [f"{chip}_{i:04d}.tif" for chip in CHIP_IDS for i in range(4)]
    band = read_bands(str(root / "train_features" / "b1"), ("B04",))[0]
    with rasterio.open(folder / "imagesTr" / "b1_0002.tif") as source:
        np.testing.assert_array_equal(source.read(1), band)
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "B02", "1": "B03", "2": "B04", "3": "B08"}
    assert dataset["labels"] == {"background": 0, "cloud": 1, "ignore": 2}
    assert dataset["numTraining"] == 6 and dataset["file_ending"] == ".tif"
    assert dataset["overwrite_image_reader_writer"] == "NaturalImage2DIO"
    with rasterio.open(folder / "labelsTr" / "a1.tif") as source:
        label = source.read(1)
    assert set(np.unique(label[:4])) == {2} and set(np.unique(label[4:])) <= {0, 1}
    folds = load_folds(folder / "oncloudn_folds.csv")
    splits = json.loads((folder / "splits_final.json").read_text())
    assert splits == nnunet_splits(folds) and len(splits) == 3
    for fold, split in enumerate(splits):
        val = set(folds.loc[folds["fold"] == fold, "chip_id"])
        assert set(split["val"]) == val and set(split["train"]) == set(CHIP_IDS) - val
        assert len(set(folds.loc[folds["fold"] == fold, "location"])) == 1


def test_export_refuses_without_force_and_writes_preprocessed_splits(tmp_path: Path) -> None:
    root = _toy_root(tmp_path / "data")
    args = ["nnunet", "export", str(root), str(tmp_path / "raw"), "--dataset-id", "17"]
    args += ["--name", "Tiny", "--n-folds", "3"]
    assert cli_main(args) == 0
    assert cli_main(args) == 2  # a non-empty export needs --force
    pre = tmp_path / "pre" / DATASET / "splits_final.json"
    pre.parent.mkdir(parents=True)
    pre.write_text('[{"train": ["a0"], "val": ["b0"]}]')  # e.g. an earlier random split
    other = ["nnunet", "export", str(root), str(tmp_path / "raw2"), "--dataset-id", "17"]
    other += ["--name", "Tiny", "--n-folds", "3", "--preprocessed", str(tmp_path / "pre")]
    assert cli_main(other) == 2  # other splits there: refused before anything is written
    assert not (tmp_path / "raw2" / DATASET).exists()
    assert cli_main(other + ["--force"]) == 0
    raw = tmp_path / "raw2" / DATASET / "splits_final.json"
    assert json.loads(pre.read_text()) == json.loads(raw.read_text())
    assert cli_main(other) == 2  # the export exists now
    with pytest.raises(DataError, match="same dataset id"):
        export_nnunet_dataset(root, tmp_path / "raw", 17, name="Other", n_folds=3)


@needs_nnunet
def test_nnunet_reads_exported_tiffs(nnunet_run: dict) -> None:
    read = nnunet_run["out"]["read_a0"]
    expected = read_bands(str(nnunet_run["root"] / "train_features" / "a0"))
    np.testing.assert_array_equal(read, expected.astype(np.float32))


@needs_nnunet
def test_nnunet_trainer_uses_our_folds(nnunet_run: dict) -> None:
    folder = nnunet_run["summary"].folder
    splits = json.loads((folder / "splits_final.json").read_text())
    planned = json.loads((nnunet_run["base"] / "pre" / DATASET / "splits_final.json").read_text())
    assert planned == splits
    for fold in (0, 1):
        assert list(nnunet_run["out"][f"split_{fold}_train"]) == sorted(splits[fold]["train"])
        assert list(nnunet_run["out"][f"split_{fold}_val"]) == sorted(splits[fold]["val"])


@needs_nnunet
def test_teacher_matches_nnunet_predictor(nnunet_run: dict, tmp_path: Path) -> None:
    model_dir = str(nnunet_run["out"]["model_dir"])
    args = ["nnunet", "import", model_dir, str(tmp_path / "teacher"), "--folds", "0", "1"]
    assert cli_main(args) == 0
    model = load_model_folder(tmp_path / "teacher")
    assert model.manifest.kind == "nnunet" and model.bands == ["B02", "B03", "B04", "B08"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the child: same kernels
    try:
        for name, chip in nnunet_run["chips"].items():
            ours = model.predict_proba(torch.from_numpy(chip)[None])[0].numpy()
            theirs = nnunet_run["out"][f"proba_{name}"][1]
            assert ours.shape == chip.shape[1:]
            assert np.abs(ours - theirs).max() <= 1e-4, name
    finally:
        torch.set_num_threads(threads)
    border = model.predict_proba(torch.from_numpy(nnunet_run["chips"]["border"])[None])[0]
    assert float(border[:7].max()) == 0.0 and float(border[:, -5:].max()) == 0.0


def _plans(network: str, nonlin: str) -> TrainedModel:
    kwargs = {
        "n_stages": 2,
        "features_per_stage": [4, 8],
        "conv_op": "torch.nn.modules.conv.Conv2d",
        "kernel_sizes": [[3, 3], [3, 3]],
        "strides": [[1, 1], [2, 2]],
        "n_conv_per_stage": [1, 1],
        "n_conv_per_stage_decoder": [1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": nonlin,
        "nonlin_kwargs": {},
    }
    architecture = {
        "network_class_name": network,
        "arch_kwargs": kwargs,
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    dataset = {"channel_names": {"0": "B02"}, "labels": {"background": 0, "cloud": 1}}
    config = {"architecture": architecture, "patch_size": [8, 8]}
    return TrainedModel(Path("plans-test"), {}, dataset, "2d", config)


def test_plans_naming_a_class_outside_the_allowlist_are_refused() -> None:
    plain = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    with pytest.raises(ConfigError, match="refusing to import 'os.system'"):
        build_network(_plans("os.system", "torch.nn.LeakyReLU"))
    with pytest.raises(ConfigError, match="refusing to import 'subprocess.Popen'"):
        build_network(_plans(plain, "subprocess.Popen"))
    if importlib.util.find_spec("dynamic_network_architectures") is not None:
        network = build_network(_plans(plain, "torch.nn.LeakyReLU"))
        assert network(torch.zeros(1, 1, 8, 8)).shape == (1, 2, 8, 8)


class _Payload:
    """Stands for code a pickle could run."""


def test_checkpoint_with_foreign_objects_is_refused(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.pth", tmp_path / "bad.pth"
    torch.save({"network_weights": {"w": torch.ones(2)}, "_best_ema": np.float32(0.5)}, good)
    torch.save({"network_weights": {}, "extra": _Payload()}, bad)
    assert float(load_checkpoint(good)["_best_ema"]) == 0.5
    with pytest.raises(ConfigError, match="refused"):
        load_checkpoint(bad)

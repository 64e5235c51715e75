"""main.py under a real runtime interpreter (Python 3.9, torch 1.8, numpy 1.20, smp 0.2.1).

Opt-in: set ``ONCLOUDN_RUNTIME_PYTHON`` to a Python 3.9 with the runtime's packages, e.g.::

    python3.9 -m venv /tmp/rt39
    /tmp/rt39/bin/pip install torch==1.8.0 torchvision==0.9.0 numpy==1.20.3 scipy==1.7.1 \\
        rasterio==1.2.6 pillow==8.2.0 tifffile==2021.8.8 segmentation-models-pytorch==0.2.1 \\
        timm==0.4.12 efficientnet-pytorch==0.6.3 pretrainedmodels==0.7.4
    ONCLOUDN_RUNTIME_PYTHON=/tmp/rt39/bin/python python -m pytest tests/runtime -m slow

An ensemble folder (a UNet, an smp Unet-ResNet34 and the threshold rule; d4 TTA and every
post-processing step on) is saved with today's torch, vendored as in submission.zip and run
there; its masks must equal those of today's stack (up to a few pixels at the threshold).
"""

import os
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

RUNTIME_PYTHON = os.environ.get("ONCLOUDN_RUNTIME_PYTHON")


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


@pytest.mark.slow
def test_main_under_the_runtime_interpreter(toy_root: Path, tmp_path: Path) -> None:
    if not RUNTIME_PYTHON:
        pytest.skip("set ONCLOUDN_RUNTIME_PYTHON to a Python 3.9 with the runtime's packages")
    (toy_root / "train_features").rename(toy_root / "test_features")
    features = toy_root / "test_features"
    (features / "abcd" / "B08.tif").unlink()
    zip_root = make_vendored_code(tmp_path / "codeexecution")
    _ensemble(zip_root / "model")
    expected = tmp_path / "expected"
    predict_chips(load_model(str(zip_root / "model")), str(features), str(expected))
    predictions = tmp_path / "predictions"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONCLOUDN_", "PYTHON"))}
    env.update(ONCLOUDN_DATA_DIR=str(toy_root), ONCLOUDN_PREDICTIONS_DIR=str(predictions))
    result = subprocess.run(
        [RUNTIME_PYTHON, "main.py", "--device", "cpu"],
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

"""``oncloudn models compare``: figures and agreement of model folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oncloudn.cli.main import main
from oncloudn.inference.compare import compare_models, mask_agreement
from oncloudn.models.builders import make_threshold_folder
from oncloudn.models.folder import save_model_folder
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.networks import build_network


def _unet(folder: Path, seed: int, tta: str) -> Path:
    torch.manual_seed(seed)
    args = {"widths": [4, 8, 16]}
    manifest = Manifest(name=folder.name, architecture={"name": "unet", "args": args}, tta=[tta])
    return save_model_folder(folder, manifest, state_dict=build_network("unet", args, 4, 1))


def test_compare_figures_and_agreement(toy_root: Path, tmp_path: Path) -> None:
    a = _unet(tmp_path / "a", 0, "identity")
    b = _unet(tmp_path / "b", 0, "flips")  # same weights, 3 TTA views
    rule = make_threshold_folder(tmp_path / "rule")
    features = toy_root / "train_features"
    result = compare_models([a, b, rule], features, max_chips=3)
    first, second, third = result.models
    network = build_network("unet", {"widths": [4, 8, 16]}, 4, 1)
    assert first.params == sum(p.numel() for p in network.parameters())
    assert third.params == 0 and third.gflops_per_chip is None
    assert second.gflops_per_chip == pytest.approx(3 * first.gflops_per_chip, rel=1e-3)
    assert first.gflops_per_chip > 0 and first.size_bytes > 0 and first.chips_per_s > 0
    assert result.n_chips == 3
    assert [result.agreement[i][i] for i in range(3)] == [1.0, 1.0, 1.0]
    assert result.agreement[0][2] == result.agreement[2][0] < 1.0


def test_mask_agreement_is_the_pooled_jaccard() -> None:
    a = {"x": np.array([[1, 1], [0, 0]], bool), "y": np.zeros((2, 2), bool)}
    b = {"x": np.array([[1, 0], [0, 0]], bool), "y": np.array([[1, 0], [0, 0]], bool)}
    assert mask_agreement(a, b) == 1 / 3
    assert mask_agreement({"z": np.zeros((2, 2), bool)}, {"z": np.zeros((2, 2), bool)}) == 1.0


def test_compare_cli(toy_root: Path, tmp_path: Path, capsys) -> None:
    a = _unet(tmp_path / "a", 1, "identity")
    out = tmp_path / "c.json"
    features = str(toy_root / "train_features")
    assert main(["models", "compare", str(a), "--data", features, "--json", str(out)]) == 0
    assert "agreement" in capsys.readouterr().out
    assert json.loads(out.read_text())["models"][0]["kind"] == "network"
    assert main(["models", "compare", str(tmp_path / "missing")]) == 2

"""The library predictor and ``oncloudn predict`` on the toy dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from oncloudn.cli.main import main
from oncloudn.errors import ConfigError, DataError
from oncloudn.inference.predictor import parse_tta, predict_folder
from oncloudn.models.builders import make_threshold_folder
from oncloudn.models.folder import save_model_folder
from oncloudn.runtime.chipio import read_bands
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.networks import build_network
from oncloudn.runtime.threshold import threshold_cloud_score


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(1), {"crs": src.crs, "transform": src.transform, "dtype": src.dtypes[0]}


def test_predict_cli_writes_georeferenced_masks(toy_root: Path, tmp_path: Path, capsys) -> None:
    model = make_threshold_folder(tmp_path / "thr")
    out = tmp_path / "preds"
    features = toy_root / "train_features"
    assert main(["predict", str(model), str(features), str(out), "--no-progress"]) == 0
    assert "6 masks written" in capsys.readouterr().out
    assert sorted(p.stem for p in out.iterdir()) == sorted(p.name for p in features.iterdir())
    for path in out.iterdir():
        mask, profile = _read(path)
        _, source = read_bands(str(features / path.stem), ["B02"], with_profile=True)
        assert profile["dtype"] == "uint8" and set(np.unique(mask)) <= {0, 1}
        assert profile["crs"] == source["crs"] and profile["transform"] == source["transform"]
        raw = read_bands(str(features / path.stem))
        expected = (threshold_cloud_score(raw) >= 0.5).astype(np.uint8)
        np.testing.assert_array_equal(mask, expected)


def _unet_folder(folder: Path, **args) -> Path:
    torch.manual_seed(0)
    args = {"widths": [4, 8, 16, 32, 64], **args}
    network = build_network("unet", args, 4, 1)
    manifest = Manifest(name="tiny", architecture={"name": "unet", "args": args})
    return save_model_folder(folder, manifest, state_dict=network)


def test_predict_probabilities_and_tta_override(toy_root: Path, tmp_path: Path) -> None:
    model = _unet_folder(tmp_path / "unet")
    out = tmp_path / "probs"
    summary = predict_folder(
        model,
        toy_root / "train_features",
        out,
        probabilities=True,
        batch_size=4,
        num_workers=1,
        tta="identity,hflip",
        chip_ids=["0000", "abcd"],
        progress=False,
    )
    assert summary["n_written"] == 2 and summary["tta_views"] == ["identity", "hflip"]
    assert summary["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    probability, profile = _read(out / "abcd.tif")
    assert profile["dtype"] == "float32" and profile["crs"] is not None
    assert probability.min() >= 0.0 and probability.max() <= 1.0
    assert probability.std() > 0


def test_the_fast_path_gives_the_plain_probabilities(toy_root: Path, tmp_path: Path) -> None:
    model = _unet_folder(tmp_path / "unet", space_to_depth=2)
    probabilities = {}
    for layout in ("off", "auto"):
        out = tmp_path / layout
        summary = predict_folder(
            model, toy_root / "train_features", out, probabilities=True, fast=layout,
            device="cpu", chip_ids=["0000", "abcd"], progress=False,
        )  # fmt: skip
        assert (summary["fast_layout"] == "off") == (layout == "off")
        probabilities[layout] = [_read(out / f"{c}.tif")[0] for c in ("0000", "abcd")]
    for plain, fast in zip(probabilities["off"], probabilities["auto"], strict=True):
        assert float(np.abs(plain - fast).max()) <= 1e-5
    with pytest.raises(ConfigError, match="unknown fast layout 'fastest'"):
        predict_folder(model, toy_root / "train_features", tmp_path / "x", fast="fastest")


def test_bad_chip_gets_the_fallback(toy_root: Path, tmp_path: Path) -> None:
    features = toy_root / "train_features"
    (features / "abcd" / "B03.tif").write_bytes(b"broken")
    model = make_threshold_folder(tmp_path / "thr")
    summary = predict_folder(model, features, tmp_path / "out", progress=False)
    assert summary["n_written"] == 6 and list(summary["failed"]) == ["abcd"]
    assert "CorruptTiffError" in summary["failed"]["abcd"]
    mask, _ = _read(tmp_path / "out" / "abcd.tif")
    assert mask.shape == (512, 512) and set(np.unique(mask)) <= {0, 1}


def test_input_errors(toy_root: Path, tmp_path: Path) -> None:
    model = make_threshold_folder(tmp_path / "thr")
    with pytest.raises(DataError, match="looks like a dataset root"):
        predict_folder(model, toy_root, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="unknown TTA view"):
        parse_tta("identity,spin")
    assert parse_tta("flips") == ["identity", "hflip", "vflip"]
    assert main(["predict", str(tmp_path / "none"), str(toy_root), str(tmp_path / "o")]) == 2

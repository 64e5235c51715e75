"""The runtime prediction loop: one valid file per chip, fallbacks, time budget."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
import torch
from PIL import Image
from rt_folders import make_unet_folder

from oncloudn.runtime import predict as rt_predict
from oncloudn.runtime.loader import load_model
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.models import threshold_model
from oncloudn.runtime.predict import fallback_mask, finalize_mask, predict_batch, predict_chips

CHIPS = ["0000", "abcd", "efgh", "ijkl", "mnop", "qrst"]


def _check_predictions(out_dir: Path, chip_ids) -> None:
    assert sorted(os.listdir(out_dir)) == sorted(c + ".tif" for c in chip_ids)
    for chip_id in chip_ids:
        path = out_dir / f"{chip_id}.tif"
        with Image.open(path) as image:
            pil = np.array(image)
        tiff = tifffile.imread(path)
        assert pil.shape == tiff.shape == (512, 512)
        assert tiff.dtype == np.uint8
        assert set(np.unique(tiff)) <= {0, 1}
        np.testing.assert_array_equal(pil, tiff)
        assert path.stat().st_size <= 524_288


def test_predict_chips_survives_bad_chips(faulty_features: Path, tmp_path: Path) -> None:
    model = load_model(str(make_unet_folder(tmp_path / "unet", tta=["flips"])))
    out_dir = tmp_path / "predictions"
    summary = predict_chips(model, str(faulty_features), str(out_dir), batch_size=4)
    _check_predictions(out_dir, CHIPS)
    assert summary["n_chips"] == summary["n_written"] == 6
    assert summary["n_fallback"] == 2
    assert set(summary["failed"]) == {"abcd", "efgh"}
    assert "MissingBandError" in summary["failed"]["abcd"]
    assert "CorruptTiffError" in summary["failed"]["efgh"]
    assert summary["tta_views"] == ["identity", "hflip", "vflip"]
    with rasterio.open(out_dir / "0000.tif") as src:
        assert src.crs is not None and src.transform[0] == 10


def test_threshold_model_finds_the_toy_clouds(toy_root: Path, tmp_path: Path) -> None:
    features = toy_root / "train_features"
    out_dir = tmp_path / "out"
    predict_chips(threshold_model(), str(features), str(out_dir), chip_ids=["0000", "qrst"])
    for chip_id in ["0000", "qrst"]:
        label = tifffile.imread(toy_root / "train_labels" / f"{chip_id}.tif").astype(bool)
        mask = tifffile.imread(out_dir / f"{chip_id}.tif").astype(bool)
        assert (mask & label).sum() / (mask | label).sum() > 0.5


def test_fallback_mask_rules(faulty_features: Path, tmp_path: Path) -> None:
    missing_b08 = fallback_mask(str(faulty_features / "abcd"))
    corrupt_b03 = fallback_mask(str(faulty_features / "efgh"))
    assert missing_b08.shape == corrupt_b03.shape == (512, 512)
    assert missing_b08.dtype == np.uint8
    assert missing_b08.any()  # B02, B03, B04 readable: the rule runs with B08 := B04
    assert not corrupt_b03.any()  # B03 unreadable: all clear
    assert not fallback_mask(str(tmp_path / "no-such-chip")).any()


def test_all_nodata_and_wrong_shape_chips(toy_root: Path, tmp_path: Path) -> None:
    features = toy_root / "train_features"
    for band in ["B02", "B03", "B04", "B08"]:
        path = features / "ijkl" / f"{band}.tif"
        with rasterio.open(path) as src:
            profile = src.profile
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.zeros((512, 512), np.uint16), 1)
        profile.update(width=256, height=256)
        with rasterio.open(features / "mnop" / f"{band}.tif", "w", **profile) as dst:
            dst.write(np.full((256, 256), 5000, np.uint16), 1)
    out_dir = tmp_path / "out"
    summary = predict_chips(threshold_model(), str(features), str(out_dir), chip_size=512)
    _check_predictions(out_dir, CHIPS)
    assert summary["n_all_nodata"] == 1 and summary["n_fallback"] == 1
    assert "shape" in summary["failed"]["mnop"]
    assert not tifffile.imread(out_dir / "ijkl.tif").any()
    assert not tifffile.imread(out_dir / "mnop.tif").any()


class _FlakyModel(torch.nn.Module):
    """Fails on batches larger than one chip, and on every chip when ``always`` is set."""

    def __init__(self, always: bool = False):
        super().__init__()
        self.bands = ["B02", "B03", "B04", "B08"]
        self.manifest = Manifest(tta=["identity"])
        self.always = always

    def predict_proba(self, raw, views=None, merge=None):
        if self.always or raw.shape[0] > 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return torch.ones(raw.shape[0], raw.shape[2], raw.shape[3])


@pytest.mark.parametrize("always", [False, True])
def test_failing_forward_is_retried_then_falls_back(
    toy_root: Path, tmp_path: Path, always: bool
) -> None:
    out_dir = tmp_path / "out"
    chips = ["0000", "abcd", "efgh"]
    features = toy_root / "train_features"
    summary = predict_chips(_FlakyModel(always), str(features), str(out_dir), chips, 3)
    _check_predictions(out_dir, chips)
    if always:
        assert summary["n_fallback"] == 3 and "out of memory" in summary["failed"]["0000"]
    else:
        assert summary["n_fallback"] == 0
        assert all(tifffile.imread(out_dir / f"{c}.tif").all() for c in chips)


class _ClockedModel(torch.nn.Module):
    """Advances a fake clock by one second per TTA view and chip."""

    def __init__(self, clock: list):
        super().__init__()
        self.bands = ["B02", "B03", "B04", "B08"]
        self.manifest = Manifest(tta=["d4"])
        self.clock = clock
        self.views_seen = []

    def predict_proba(self, raw, views=None, merge=None):
        self.views_seen.append(len(views))
        self.clock[0] += len(views) * raw.shape[0]
        return torch.zeros(raw.shape[0], raw.shape[2], raw.shape[3])


def test_time_budget_steps_tta_down(toy_root: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    clock = [0.0]
    monkeypatch.setattr(rt_predict.time, "monotonic", lambda: clock[0])
    model = _ClockedModel(clock)
    features = toy_root / "train_features"
    with caplog.at_level(logging.WARNING, logger="oncloudn.runtime.predict"):
        summary = predict_chips(model, str(features), str(tmp_path / "o"), None, 1, "cpu", 30.0)
    # 2 chips at 8 views project 16 + 4 * 8 = 48 s > 27 s: 4 views; 2 more project 32 s: 2.
    assert model.views_seen == [8, 8, 4, 4, 2, 2]
    assert summary["tta_views_initial"] == list(rt_predict.resolve_views("d4"))
    assert summary["tta_views"] == ["identity", "hflip"]
    assert len(summary["events"]) == 2 and "TTA 8 -> 4" in summary["events"][0]
    assert "TTA 4 -> 2 views" in caplog.text
    _check_predictions(tmp_path / "o", CHIPS)


def test_deadline_switches_to_the_fallback_rule(toy_root: Path, tmp_path: Path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(rt_predict.time, "monotonic", lambda: clock[0])
    model = _ClockedModel(clock)
    features = str(toy_root / "train_features")
    summary = predict_chips(model, features, str(tmp_path / "o"), None, 2, "cpu", 10.0)
    assert model.views_seen == [8]  # 16 s spent on the first batch: past the deadline
    assert summary["n_fallback"] == 4 and "threshold rule" in summary["events"][-1]
    _check_predictions(tmp_path / "o", CHIPS)


def test_predict_batch_and_finalize(unet_folder: Path) -> None:
    model = load_model(str(unet_folder))
    raw = np.random.default_rng(0).integers(1, 9000, (2, 4, 32, 32)).astype(np.uint16)
    probability = predict_batch(model, raw, "cpu")
    assert probability.shape == (2, 32, 32) and probability.dtype == np.float32
    nodata = np.zeros((32, 32), bool)
    nodata[:4] = True
    manifest = Manifest(threshold=0.0)
    mask = finalize_mask(probability[0], nodata, manifest)
    assert mask.dtype == np.uint8 and mask[4:].all() and not mask[:4].any()


def test_probabilities_go_beside_not_into_the_predictions(toy_root: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "pred"
    predict_chips(
        threshold_model(),
        str(toy_root / "train_features"),
        str(out_dir),
        chip_ids=["0000"],
        write_probabilities=True,
    )
    assert os.listdir(out_dir) == ["0000.tif"]
    proba = tifffile.imread(tmp_path / "pred_probabilities" / "0000.tif")
    assert proba.dtype == np.float32 and proba.max() <= 1.0


def test_any_size_is_padded_to_the_stride_and_cropped_back(unet_folder: Path) -> None:
    """The core predicts any H x W: reflection padding to the stride, then cropping."""
    from oncloudn.runtime.predict_array import views_for_shape

    model = load_model(str(unet_folder))
    assert model.input_multiple == 2  # TINY_WIDTHS: one down-sampling
    raw = np.random.default_rng(1).integers(1, 9000, (1, 4, 37, 50)).astype(np.uint16)
    probability = predict_batch(model, raw, "cpu", ["d4"])
    assert probability.shape == (1, 37, 50)
    padded = np.pad(raw, [(0, 0), (0, 0), (0, 1), (0, 0)], mode="reflect")
    expected = predict_batch(model, padded, "cpu", ["identity", "hflip", "vflip", "rot180"])
    np.testing.assert_allclose(probability, expected[:, :37], atol=1e-6)
    assert views_for_shape(["identity", "rot90", "hflip"], 37, 50) == ["identity", "hflip"]
    assert views_for_shape(["rot90"], 37, 50) == ["identity"]
    assert views_for_shape(["rot90", "transpose"], 64, 64) == ["rot90", "transpose"]


def test_chips_of_any_size_without_the_512_rule(toy_root: Path, tmp_path: Path) -> None:
    features = toy_root / "train_features"
    for band in ["B02", "B03", "B04", "B08"]:
        path = features / "mnop" / f"{band}.tif"
        with rasterio.open(path) as src:
            profile, data = src.profile, src.read(1)
        profile.update(width=300, height=200)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data[:200, :300], 1)
    model = load_model(str(make_unet_folder(tmp_path / "unet", tta=["d4"])))
    summary = predict_chips(model, str(features), str(tmp_path / "o"), ["mnop", "0000"])
    assert summary["n_fallback"] == 0
    assert tifffile.imread(tmp_path / "o" / "mnop.tif").shape == (200, 300)
    assert tifffile.imread(tmp_path / "o" / "0000.tif").shape == (512, 512)

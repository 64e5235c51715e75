"""Broken chip files are refused fast and named right (issue 11, section 4).

A header declaring a huge raster is refused before reading; when bands disagree in shape the
odd one is named; a truncated file names GDAL's real reason, and GDAL's log stays out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
from affine import Affine
from clierrors import reset_logging
from toydata import write_tif, write_toy_dataset

from oncloudn.cli.main import main
from oncloudn.data.chips import DatasetPaths, read_chip
from oncloudn.data.validate import check_dataset
from oncloudn.errors import ChipFormatError, CorruptTiffError
from oncloudn.models.builders import make_threshold_folder
from oncloudn.runtime.chip_reading import fallback_mask, load_chip, profile_quietly
from oncloudn.runtime.chipio import read_bands

SIZE = 64
MAIN = Path(__file__).resolve().parents[2] / "submission" / "main.py"


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    """Three 64 x 64 labelled train chips."""
    return write_toy_dataset(
        tmp_path / "data", ["aaaa", "bbbb", "cccc"], ["A", "B", "C"], size=SIZE
    )


def write_huge_header(path: Path, side: int) -> None:
    """A valid sparse GeoTIFF whose header declares ``side`` x ``side`` uint16 pixels (~100 KB)."""
    profile = {
        "driver": "GTiff",
        "width": side,
        "height": side,
        "count": 1,
        "dtype": "uint16",
        "tiled": True,
        "blockxsize": 1024,
        "blockysize": 1024,
        "sparse_ok": True,
        "crs": "EPSG:32633",
        "transform": Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0),
    }
    with rasterio.open(path, "w", **profile):
        pass


def test_huge_declared_size_is_refused_before_reading(small_root: Path) -> None:
    band = small_root / "train_features" / "bbbb" / "B03.tif"
    write_huge_header(band, 100_000)
    started = time.perf_counter()
    with pytest.raises(ChipFormatError, match="declares 100,000 x 100,000 pixels") as caught:
        read_chip(DatasetPaths(small_root), "bbbb")
    assert caught.value.path == str(band)
    report = check_dataset(small_root)
    assert time.perf_counter() - started < 10
    assert report.n_checked == 2 and any("100,000 x 100,000" in e for e in report.errors)


def test_main_py_treats_a_huge_band_as_a_broken_chip_at_once(small_root: Path) -> None:
    features = small_root / "train_features"
    write_huge_header(features / "bbbb" / "B08.tif", 20_000)
    started = time.perf_counter()
    error = load_chip(str(features), "bbbb", ["B02", "B03", "B04", "B08"], chip_size=SIZE)
    assert isinstance(error, ChipFormatError) and "B08" in str(error)
    mask = fallback_mask(str(features / "bbbb"), chip_size=SIZE)  # the rule, B08 <- B04
    assert profile_quietly(str(features / "bbbb"), SIZE) is not None
    assert time.perf_counter() - started < 5
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8


def test_declared_size_is_checked_against_the_chip_size(small_root: Path) -> None:
    with pytest.raises(ChipFormatError, match=r"expected \(512, 512\)"):
        read_bands(str(small_root / "train_features" / "aaaa"), size=512)


@pytest.mark.parametrize("odd", ["B02", "B08"])
def test_the_band_that_differs_is_named(small_root: Path, odd: str) -> None:
    band = small_root / "train_features" / "cccc" / f"{odd}.tif"
    write_tif(band, np.ones((SIZE // 2, SIZE), np.uint16))
    with pytest.raises(ChipFormatError) as caught:
        read_chip(DatasetPaths(small_root), "cccc")
    assert caught.value.path == str(band)
    assert str(caught.value).startswith(f"chip 'cccc': band {odd} has shape (32, 64)")


def _truncate(path: Path) -> None:
    with rasterio.open(path) as src:
        array, profile = src.read(1), src.profile
    profile.update(compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.random.default_rng(0).integers(0, 9000, array.shape, dtype=np.uint16), 1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def test_truncated_band_names_the_file_and_gdals_reason(small_root: Path, capsys) -> None:
    band = small_root / "train_features" / "aaaa" / "B04.tif"
    _truncate(band)
    with pytest.raises(CorruptTiffError) as caught:
        read_chip(DatasetPaths(small_root), "aaaa")
    message = str(caught.value)
    assert caught.value.path == str(band) and "band B04" in message
    assert "See previous exception" not in message
    assert "scanline" in message or "TIFFReadEncodedStrip" in message or "Decod" in message
    capsys.readouterr()
    try:
        assert main(["check-data", str(small_root)]) == 1
    finally:
        reset_logging()
    captured = capsys.readouterr()
    assert "B04" in captured.out and "See previous exception" not in captured.out
    assert "GDAL signalled" not in captured.err and "rasterio._err" not in captured.err


def test_main_py_survives_a_huge_band_quickly(toy_root: Path, tmp_path: Path) -> None:
    """The whole main.py: one valid mask per chip, the huge chip a fallback, in seconds."""
    (toy_root / "train_features").rename(toy_root / "test_features")
    (toy_root / "train_metadata.csv").rename(toy_root / "test_metadata.csv")
    write_huge_header(toy_root / "test_features" / "efgh" / "B08.tif", 20_000)
    model = make_threshold_folder(tmp_path / "model")
    predictions = tmp_path / "predictions"
    env = {
        **os.environ,
        "ONCLOUDN_DATA_DIR": str(toy_root),
        "ONCLOUDN_PREDICTIONS_DIR": str(predictions),
        "ONCLOUDN_MODEL_DIR": str(model),
        "CUDA_VISIBLE_DEVICES": "",
    }
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(MAIN)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.perf_counter() - started < 60  # was 22 s and 7 GB for this one chip
    assert "1 fallbacks" in result.stderr and "20,000 x 20,000" in result.stderr
    chips = sorted(p.name for p in (toy_root / "test_features").iterdir())
    assert sorted(os.listdir(predictions)) == [f"{c}.tif" for c in chips]
    assert tifffile.imread(predictions / "efgh.tif").shape == (512, 512)

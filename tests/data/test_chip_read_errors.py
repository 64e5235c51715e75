"""Every error of data/chips.py and runtime/chipio.py names the chip and the path at fault."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from toydata import write_tif

from oncloudn.data.chips import DatasetPaths, list_chips, read_chip, read_metadata
from oncloudn.errors import (
    ChipError,
    ChipFormatError,
    ChipNotFoundError,
    CorruptTiffError,
    DataError,
    MissingBandError,
    MissingLabelError,
)
from oncloudn.runtime.chipio import read_bands, read_label


def _copy(root: Path, tmp_path: Path) -> DatasetPaths:
    target = tmp_path / "copy"
    shutil.copytree(root, target)
    return DatasetPaths(target)


def _assert_names(error: ChipError, chip_id: str, path: Path) -> None:
    message = str(error)
    assert chip_id in message and str(path) in message
    assert error.chip_id == chip_id and error.path == str(path)


def test_clean_chip_reads(toy_root: Path) -> None:
    chip = read_chip(DatasetPaths(toy_root), "abcd")
    assert chip.bands.shape == (4, 512, 512) and chip.bands.dtype == np.uint16
    assert chip.label.dtype == np.uint8 and set(np.unique(chip.label)) <= {0, 1}
    assert chip.crs is not None and chip.transform.a == 10


def test_missing_band(toy_root: Path, tmp_path: Path) -> None:
    paths = _copy(toy_root, tmp_path)
    band = paths.chip_dir("abcd") / "B08.tif"
    band.unlink()
    with pytest.raises(MissingBandError) as caught:
        read_chip(paths, "abcd")
    _assert_names(caught.value, "abcd", band)
    assert "B08" in str(caught.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_tiff(toy_root: Path, tmp_path: Path, damage: str) -> None:
    paths = _copy(toy_root, tmp_path)
    band = paths.chip_dir("efgh") / "B03.tif"
    content = band.read_bytes()
    band.write_bytes(
        {"garbage": b"not a tiff " * 64, "truncated": content[: len(content) // 3], "empty": b""}[
            damage
        ]
    )
    with pytest.raises(CorruptTiffError) as caught:
        read_chip(paths, "efgh")
    _assert_names(caught.value, "efgh", band)


def test_corrupt_label(toy_root: Path, tmp_path: Path) -> None:
    paths = _copy(toy_root, tmp_path)
    paths.label_path("efgh").write_bytes(b"\x00" * 100)
    with pytest.raises(CorruptTiffError) as caught:
        read_chip(paths, "efgh")
    _assert_names(caught.value, "efgh", paths.label_path("efgh"))


def test_band_shape_mismatch(toy_root: Path, tmp_path: Path) -> None:
    paths = _copy(toy_root, tmp_path)
    band = paths.chip_dir("ijkl") / "B04.tif"
    write_tif(band, np.ones((256, 512), np.uint16))
    with pytest.raises(ChipFormatError) as caught:
        read_chip(paths, "ijkl")
    _assert_names(caught.value, "ijkl", band)
    assert "shape" in str(caught.value)


def test_label_shape_mismatch(toy_root: Path, tmp_path: Path) -> None:
    paths = _copy(toy_root, tmp_path)
    write_tif(paths.label_path("ijkl"), np.ones((512, 256), np.uint8))
    with pytest.raises(ChipFormatError) as caught:
        read_chip(paths, "ijkl")
    _assert_names(caught.value, "ijkl", paths.label_path("ijkl"))


def test_wrong_dtype(toy_root: Path, tmp_path: Path) -> None:
    paths = _copy(toy_root, tmp_path)
    band = paths.chip_dir("mnop") / "B02.tif"
    write_tif(band, np.full((512, 512), 0.1, np.float32))
    with pytest.raises(ChipFormatError) as caught:
        read_chip(paths, "mnop")
    _assert_names(caught.value, "mnop", band)
    assert "float32" in str(caught.value) and "uint16" in str(caught.value)


def test_multiband_file(toy_root: Path, tmp_path: Path) -> None:
    paths = _copy(toy_root, tmp_path)
    band = paths.chip_dir("mnop") / "B02.tif"
    profile = {"driver": "GTiff", "height": 8, "width": 8, "count": 2, "dtype": "uint16"}
    with rasterio.open(band, "w", **profile) as dst:
        dst.write(np.ones((2, 8, 8), np.uint16))
    with pytest.raises(ChipFormatError) as caught:
        read_chip(paths, "mnop")
    _assert_names(caught.value, "mnop", band)


def test_missing_label(toy_root: Path, tmp_path: Path) -> None:
    paths = _copy(toy_root, tmp_path)
    paths.label_path("qrst").unlink()
    with pytest.raises(MissingLabelError) as caught:
        read_chip(paths, "qrst")
    _assert_names(caught.value, "qrst", paths.label_path("qrst"))
    # Without labels the chip still reads.
    assert read_chip(paths, "qrst", with_label=False).label is None


def test_chip_not_found(toy_root: Path) -> None:
    paths = DatasetPaths(toy_root)
    with pytest.raises(ChipNotFoundError) as caught:
        read_chip(paths, "zzzz")
    _assert_names(caught.value, "zzzz", paths.chip_dir("zzzz"))


def test_chipio_functions_directly(toy_root: Path) -> None:
    paths = DatasetPaths(toy_root)
    array = read_bands(str(paths.chip_dir("abcd")), bands=("B08", "B02"))
    assert array.shape == (2, 512, 512)
    with pytest.raises(MissingLabelError):
        read_label(str(paths.labels_dir / "nope.tif"))
    with pytest.raises(MissingBandError):
        read_bands(str(paths.chip_dir("abcd")), bands=("B02", "B11"))


def test_csv_without_required_columns(toy_root: Path, tmp_path: Path) -> None:
    paths = _copy(toy_root, tmp_path)
    paths.metadata_path.write_text("id,location\nabcd,Loc A\n")
    with pytest.raises(DataError) as caught:
        read_metadata(paths.metadata_path)
    assert str(paths.metadata_path) in str(caught.value) and "chip_id" in str(caught.value)
    with pytest.raises(DataError):
        list_chips(paths)


def test_csv_duplicate_chip_ids(toy_root: Path, tmp_path: Path) -> None:
    paths = _copy(toy_root, tmp_path)
    with paths.metadata_path.open("a") as handle:
        handle.write("abcd,Loc A,2020-01-01T10:00:00Z\n")
    with pytest.raises(DataError) as caught:
        read_metadata(paths.metadata_path)
    assert "duplicate" in str(caught.value) and "abcd" in str(caught.value)
    assert str(paths.metadata_path) in str(caught.value)


def test_csv_keeps_leading_zero_ids(toy_root: Path) -> None:
    frame = list_chips(DatasetPaths(toy_root))
    assert "0000" in set(frame.chip_id)
    assert dict(zip(frame.chip_id, frame.location, strict=True))["0000"] == "Loc A"


def test_missing_metadata_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "train_metadata.csv")


def test_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split"):
        DatasetPaths(tmp_path, "val")

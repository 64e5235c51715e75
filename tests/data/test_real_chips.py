"""Reading the real Sentinel-2 chips in ../shared/data (skipped where the folder is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oncloudn.data.chips import DatasetPaths, list_chips, read_chip

pytestmark = pytest.mark.real_data


def _chips(root: Path) -> list:
    paths = DatasetPaths(root)
    frame = list_chips(paths)
    return [
        read_chip(paths, chip_id, with_label=paths.labels_dir.is_dir()) for chip_id in frame.chip_id
    ]


def test_oncloudn_real_chips_are_georeferenced_uint16(shared_data: Path) -> None:
    root = shared_data / "oncloudn-real-unlabeled"
    frame = list_chips(DatasetPaths(root))
    assert len(frame) >= 1
    assert set(frame.location) <= {"Chifunfu", "Addis Ababa"}
    for chip in _chips(root):
        assert chip.bands.dtype == np.uint16
        assert chip.bands.shape == (4, 512, 512)
        assert chip.crs is not None and chip.crs.is_projected
        epsg = chip.crs.to_epsg()
        assert 32601 <= epsg <= 32660 or 32701 <= epsg <= 32760, epsg  # a UTM zone
        assert chip.transform.a == pytest.approx(10.0)
        assert chip.transform.e == pytest.approx(-10.0)
        assert chip.nodata.shape == (512, 512) and chip.nodata.dtype == bool
        assert chip.nodata.mean() < 1.0
        assert chip.label is None


def test_real_bright_values_are_not_clipped(shared_data: Path) -> None:
    bands = np.stack([chip.bands for chip in _chips(shared_data / "oncloudn-real-unlabeled")])
    assert bands.max() > 10000  # bright clouds exceed reflectance 1.0


def test_l1c_chips_read(shared_data: Path) -> None:
    chips = _chips(shared_data / "s2-l1c-unlabeled")
    assert len(chips) >= 2
    for chip in chips:
        assert chip.bands.shape == (4, 512, 512) and chip.bands.dtype == np.uint16
        assert chip.crs is not None
        assert chip.metadata == {}  # read_chip only carries the metadata it is given


def test_labeled_ukis_chip_has_binary_label(shared_data: Path) -> None:
    root = shared_data / "s2-labeled-ukis"
    paths = DatasetPaths(root)
    (chip,) = _chips(root)
    assert chip.label is not None
    assert chip.label.shape == chip.bands.shape[1:] == (512, 512)
    values = set(np.unique(chip.label).tolist())
    assert values <= {0, 1, 255} and 1 in values and 0 in values
    assert list_chips(paths).location.tolist() == ["unknown"]
    # The source has no georeference: reading must still work (CRS missing, not an error).
    assert chip.crs is None

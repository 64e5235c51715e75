"""The synthetic dataset generator: layout, determinism, realism and difficulty."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from oncloudn.data.chips import DatasetPaths, list_chips, read_chip, read_metadata
from oncloudn.data.sample import generate_sample_dataset, read_sample_info
from oncloudn.errors import DataError
from oncloudn.runtime.chipio import BANDS


def _all_chips(root: Path, split: str = "train") -> list:
    paths = DatasetPaths(root, split)
    return [read_chip(paths, chip_id) for chip_id in list_chips(paths).chip_id]


def _tags(path: Path) -> dict:
    with rasterio.open(path) as src:
        return {"tags": src.tags(), "crs": src.crs, "transform": src.transform}


def test_layout_at_full_size(tmp_path: Path) -> None:
    root = generate_sample_dataset(tmp_path / "root", chips=3, test_chips=2, size=512)
    for split, count in (("train", 3), ("test", 2)):
        paths = DatasetPaths(root, split)
        frame = list_chips(paths)
        assert len(frame) == count
        for chip_id in frame.chip_id:
            assert len(chip_id) == 4 and chip_id.isalpha() and chip_id.islower()
            assert sorted(p.name for p in paths.chip_dir(chip_id).iterdir()) == [
                f"{band}.tif" for band in BANDS
            ]
            chip = read_chip(paths, chip_id)
            assert chip.bands.shape == (4, 512, 512) and chip.bands.dtype == np.uint16
            assert chip.label.shape == (512, 512) and set(np.unique(chip.label)) <= {0, 1}
            assert chip.crs is not None and 32601 <= chip.crs.to_epsg() <= 32760
            assert chip.transform.a == 10.0 and chip.transform.e == -10.0
            with rasterio.open(paths.chip_dir(chip_id) / "B02.tif") as src:
                assert src.nodata == 0
    train = read_metadata(root / "train_metadata.csv")
    test = read_metadata(root / "test_metadata.csv")
    assert list(train.columns) == ["chip_id", "location", "datetime", "cloudpath"]
    assert list(test.columns) == ["chip_id", "location", "datetime"]
    assert not set(train.chip_id) & set(test.chip_id)
    assert all(value.endswith("Z") and "T" in value for value in train.datetime)


def test_several_locations_and_datetimes(sample_root: Path) -> None:
    frame = list_chips(DatasetPaths(sample_root))
    assert frame.location.nunique() == 4
    assert frame.datetime.nunique() >= 3
    assert "unknown" not in set(frame.location)


def test_same_seed_same_files(tmp_path: Path) -> None:
    kwargs = {"chips": 3, "test_chips": 1, "size": 64, "label_noise": 0.5}
    first = generate_sample_dataset(tmp_path / "a", **kwargs)
    second = generate_sample_dataset(tmp_path / "b", **kwargs)
    other = generate_sample_dataset(tmp_path / "c", seed=1, **kwargs)
    for name in ("train_metadata.csv", "test_metadata.csv", "sample_info.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
        assert (first / name).read_bytes() != (other / name).read_bytes()
    for chip_a, chip_b in zip(_all_chips(first), _all_chips(second), strict=True):
        assert chip_a.chip_id == chip_b.chip_id
        np.testing.assert_array_equal(chip_a.bands, chip_b.bands)
        np.testing.assert_array_equal(chip_a.label, chip_b.label)
        for band in BANDS:
            relative = Path("train_features") / chip_a.chip_id / f"{band}.tif"
            assert _tags(first / relative) == _tags(second / relative)
        relative = Path("train_labels") / f"{chip_a.chip_id}.tif"
        assert _tags(first / relative) == _tags(second / relative)
    other_bands = np.stack([chip.bands for chip in _all_chips(other)])
    assert not np.array_equal(np.stack([c.bands for c in _all_chips(first)]), other_bands)


def test_nodata_borders_have_label_zero(sample_root: Path) -> None:
    chips = _all_chips(sample_root)
    with_nodata = [chip for chip in chips if chip.nodata.any()]
    assert 0 < len(with_nodata) < len(chips)
    for chip in with_nodata:
        assert (chip.bands[:, chip.nodata] == 0).all()
        assert (chip.label[chip.nodata] == 0).all()
        assert chip.nodata.mean() < 0.9
    for chip in chips:  # outside the border, no band is ever 0
        assert (chip.bands[:, ~chip.nodata] > 0).all()


def test_bright_values_are_not_clipped(sample_root: Path) -> None:
    chips = _all_chips(sample_root)
    cloud_values = np.concatenate([chip.bands[:, chip.label == 1].ravel() for chip in chips])
    assert cloud_values.max() > 10000
    # No pile-up at a guessed maximum: the brightest value occurs rarely.
    assert (cloud_values == cloud_values.max()).mean() < 0.001


def test_land_covers_have_their_spectra(sample_root: Path) -> None:
    pixels = np.concatenate(
        [c.bands[:, (c.label == 0) & ~c.nodata] for c in _all_chips(sample_root)], axis=1
    ).astype(np.float32)
    blue, green, red, nir = pixels
    vegetation = (nir - red) / (nir + red) > 0.6
    water = (nir < red) & (nir < 600)
    assert vegetation.mean() > 0.02 and water.mean() > 0.005
    assert np.median(nir[vegetation]) > 2500 and np.median(red[vegetation]) < 800
    bright_clear = pixels[:3].mean(axis=0) > 3000  # snow/desert/haze that is not cloud
    assert bright_clear.mean() > 0.05


def test_label_noise_recorded(sample_root: Path) -> None:
    corrupted = read_sample_info(sample_root)["corrupted_labels"]
    assert len(corrupted) == 3  # round(0.25 * 12)
    assert set(corrupted.values()) <= {"inverted", "all_cloud", "snow_as_cloud"}
    for chip_id, kind in corrupted.items():
        with rasterio.open(sample_root / "train_labels" / f"{chip_id}.tif") as src:
            assert src.tags()["ONCLOUDN_LABEL_NOISE"] == kind


def _pooled_jaccard(chips: list, thresholds: np.ndarray) -> np.ndarray:
    intersection = np.zeros(len(thresholds))
    union = np.zeros(len(thresholds))
    for chip in chips:
        visible = chip.bands[:3].astype(np.float32).mean(axis=0)
        prediction = visible[None] > thresholds[:, None, None]
        truth = chip.label[None] > 0
        intersection += (prediction & truth).sum(axis=(1, 2))
        union += (prediction | truth).sum(axis=(1, 2))
    return intersection / np.maximum(union, 1)


def test_brightness_threshold_is_not_enough(tmp_path: Path) -> None:
    root = generate_sample_dataset(tmp_path / "root", chips=8, test_chips=0, size=128)
    thresholds = np.arange(1000, 12001, 250, dtype=np.float32)
    scores = _pooled_jaccard(_all_chips(root), thresholds)
    assert 0.3 < scores.max() < 0.9, scores.max()  # informative, but far from solved
    assert scores[thresholds == 3000][0] < 0.9


def test_refuses_non_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "root"
    generate_sample_dataset(out, chips=1, test_chips=0, size=32)
    with pytest.raises(DataError, match="not empty"):
        generate_sample_dataset(out, chips=1, test_chips=0, size=32)
    generate_sample_dataset(out, chips=2, test_chips=0, size=32, seed=5, force=True)
    assert len(list_chips(DatasetPaths(out))) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp folder gone


def test_force_refuses_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "home"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="notes.txt"):
        generate_sample_dataset(out, chips=1, test_chips=0, size=32, force=True)
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "kwargs", [{"chips": 0}, {"size": 4}, {"label_noise": 1.5}, {"n_locations": 0}]
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(DataError):
        generate_sample_dataset(tmp_path / "root", **kwargs)
    assert not (tmp_path / "root").exists()


def test_many_locations_get_generated_names(tmp_path: Path) -> None:
    root = generate_sample_dataset(
        tmp_path / "root", chips=12, test_chips=0, size=32, n_locations=10
    )
    names = set(list_chips(DatasetPaths(root)).location)
    assert len(names) == 10 and "loc_09" in names and "Chifunfu" in names

"""The torch dataset: item shapes and dtypes, normalization, transforms, ignored pixels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from oncloudn.data.chips import DatasetPaths, list_chips, read_chip
from oncloudn.data.dataset import CloudDataset
from oncloudn.errors import DataError


def test_item_shapes_and_dtypes(clean_root: Path) -> None:
    paths = DatasetPaths(clean_root)
    dataset = CloudDataset(paths)
    assert len(dataset) == len(list_chips(paths))
    item = dataset[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (4, 128, 128)
    assert item["mask"].dtype == torch.float32 and item["mask"].shape == (128, 128)
    assert item["valid"].dtype == torch.bool and bool(item["valid"].all())
    chip = read_chip(paths, item["chip_id"])
    np.testing.assert_array_equal(item["image"].numpy(), chip.bands.astype(np.float32))  # raw DN
    np.testing.assert_array_equal(item["mask"].numpy(), chip.label.astype(np.float32))


def test_chip_subset_bands_and_batching(clean_root: Path) -> None:
    paths = DatasetPaths(clean_root)
    ids = list(list_chips(paths).chip_id)[:3][::-1]
    dataset = CloudDataset(paths, chip_ids=ids, bands=("B08", "B04"))
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch["image"].shape == (3, 2, 128, 128)
    assert list(batch["chip_id"]) == ids
    expected = read_chip(paths, ids[0], bands=("B08", "B04")).bands
    np.testing.assert_array_equal(batch["image"][0].numpy(), expected)


def test_normalization_by_name(clean_root: Path) -> None:
    paths = DatasetPaths(clean_root)
    raw = CloudDataset(paths)[1]["image"]
    scaled = CloudDataset(paths, normalization="reflectance")[1]["image"]
    torch.testing.assert_close(scaled, raw / 10000.0)
    params = {"mean": [0.1, 0.1, 0.1, 0.2], "std": [0.2, 0.2, 0.2, 0.3]}
    standard = CloudDataset(paths, normalization="dataset", normalization_params=params)[1]
    mean = torch.tensor(params["mean"]).view(4, 1, 1)
    std = torch.tensor(params["std"]).view(4, 1, 1)
    torch.testing.assert_close(standard["image"], (raw / 10000.0 - mean) / std)
    with pytest.raises(DataError, match="zscore_chip"):
        CloudDataset(paths, normalization="minmax")


def test_transform_sees_numpy_dict(clean_root: Path) -> None:
    seen = {}

    def flip(sample: dict) -> dict:
        seen.update({key: (type(value), value.dtype) for key, value in sample.items()})
        return {key: np.ascontiguousarray(value[..., ::-1]) for key, value in sample.items()}

    paths = DatasetPaths(clean_root)
    plain = CloudDataset(paths)[2]
    flipped = CloudDataset(paths, transform=flip)[2]
    assert seen == {
        "image": (np.ndarray, np.float32),
        "mask": (np.ndarray, np.float32),
        "valid": (np.ndarray, np.bool_),
    }
    torch.testing.assert_close(flipped["image"], plain["image"].flip(-1))
    torch.testing.assert_close(flipped["mask"], plain["mask"].flip(-1))


def test_without_labels(clean_root: Path) -> None:
    dataset = CloudDataset(DatasetPaths(clean_root, "test"), with_labels=False)
    item = dataset[0]
    assert set(item) == {"image", "chip_id"}


def test_ignore_value(clean_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(clean_root, root)
    paths = DatasetPaths(root)
    chip_id = list_chips(paths).chip_id.iloc[0]
    label_path = paths.label_path(chip_id)
    with rasterio.open(label_path) as src:
        profile, label = src.profile, src.read(1)
    label[:10] = 255
    label[10:20] = 1
    with rasterio.open(label_path, "w", **profile) as dst:
        dst.write(label, 1)
    item = CloudDataset(paths, chip_ids=[chip_id])[0]
    assert not item["valid"][:10].any() and item["valid"][10:].all()
    assert (item["mask"][:10] == 0).all() and (item["mask"][10:20] == 1).all()
    counted = CloudDataset(paths, chip_ids=[chip_id], ignore_value=None)[0]
    assert counted["valid"].all() and (counted["mask"][:10] == 1).all()


def test_empty_split(tmp_path: Path) -> None:
    (tmp_path / "train_features").mkdir()
    with pytest.raises(DataError, match="no chips"):
        CloudDataset(DatasetPaths(tmp_path))

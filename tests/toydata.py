"""Seeded toy datasets in the On Cloud N layout, shared by tests (import as ``toydata``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from oncloudn.runtime.bands import BANDS


def write_tif(path: Path, array: np.ndarray, crs: str | None = "EPSG:32633") -> None:
    """Write a single-band GeoTIFF (test helper)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": array.shape[0],
        "width": array.shape[1],
        "count": 1,
        "dtype": str(array.dtype),
    }
    if crs:
        profile.update(crs=crs, transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def write_toy_dataset(
    root: Path,
    chip_ids: list[str],
    locations: list[str],
    split: str = "train",
    size: int = 512,
    seed: int = 0,
) -> Path:
    """A toy dataset root: bright square-ish clouds over dark ground, labels = clouds.

    Deliberately trivial (bright = cloud); the realistic generator is oncloudn.data.sample.
    """
    rng = np.random.default_rng(seed)
    rows = ["chip_id,location,datetime"]
    for index, (chip_id, location) in enumerate(zip(chip_ids, locations, strict=True)):
        label = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        label[y : y + size // 3, x : x + size // 3] = 1
        for band in BANDS:
            ground = rng.integers(300, 1500, (size, size))
            values = np.where(label == 1, rng.integers(4000, 9000, (size, size)), ground)
            write_tif(
                root / f"{split}_features" / chip_id / f"{band}.tif", values.astype(np.uint16)
            )
        write_tif(root / f"{split}_labels" / f"{chip_id}.tif", label)
        rows.append(f"{chip_id},{location},2020-0{1 + index % 9}-01T10:00:00Z")
    (root / f"{split}_metadata.csv").write_text("\n".join(rows) + "\n")
    return root

"""A generated Sentinel-2-like scene of any size, written as a GeoTIFF block by block.

For tests and ``oncloudn bench scene``: a few procedural chips (``scene_synthesis.py``, L2A
DN of B02, B03, B04, B08) are generated once and laid out over the scene in random flips and
quarter turns, one row of blocks at a time, so a 10,980 x 10,980 scene never sits in memory.
A diagonal swath edge leaves the scene's left corner as nodata (0 in every band), as on a
real tile at the edge of an orbit. The file is tiled, 4 bands (described ``B02``..``B08``),
in a UTM CRS with 10 m pixels, and written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from oncloudn.data.scene_synthesis import BIOMES, synthesize_chip
from oncloudn.runtime.atomic import atomic_path
from oncloudn.runtime.bands import BANDS

SCENE_CRS = "EPSG:32633"
SCENE_ORIGIN = (300000.0, 5900040.0)
PIXEL_SIZE = 10.0


def _chip_pool(rng: np.random.Generator, count: int, block: int) -> list[np.ndarray]:
    biomes = sorted(BIOMES)
    return [
        synthesize_chip(rng, block, biomes[i % len(biomes)], nodata_probability=0.0).bands
        for i in range(count)
    ]


def _swath_nodata(rows: slice, cols: slice, height: int, width: int) -> np.ndarray:
    """``True`` left of a line from 40 % of the top edge to the bottom-left corner."""
    yy, xx = np.mgrid[rows, cols]
    return xx < 0.4 * width * (1.0 - yy / max(1, height))


def write_synthetic_scene(
    path: str | os.PathLike,
    height: int,
    width: int,
    seed: int = 0,
    block: int = 512,
    pool: int = 6,
    nodata_edge: bool = True,
    compress: str | None = "deflate",
) -> Path:
    """Write a ``height x width`` 4-band uint16 scene GeoTIFF (see the module docstring).

    Args:
        path: Destination ``.tif``.
        height: Rows.
        width: Columns.
        seed: Seed of everything random.
        block: Side of the chips laid out (and of the file's tiles).
        pool: Distinct chips generated.
        nodata_edge: Leave a nodata swath edge at the left.
        compress: GeoTIFF compression (``None`` for none).
    """
    rng = np.random.default_rng(seed)
    chips = _chip_pool(rng, pool, block)
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": len(BANDS),
        "dtype": "uint16",
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "crs": SCENE_CRS,
        "transform": from_origin(*SCENE_ORIGIN, PIXEL_SIZE, PIXEL_SIZE),
        "BIGTIFF": "IF_SAFER",
    }
    if compress:
        profile["compress"] = compress
    with atomic_path(path) as temp, rasterio.open(temp, "w", **profile) as dst:
        for index, band in enumerate(BANDS, start=1):
            dst.set_band_description(index, band)
        for top in range(0, height, block):
            rows = min(block, height - top)
            strip = np.empty((len(BANDS), rows, width), np.uint16)
            for left in range(0, width, block):
                cols = min(block, width - left)
                chip = chips[rng.integers(len(chips))]
                chip = np.rot90(chip, int(rng.integers(4)), axes=(1, 2))
                if rng.random() < 0.5:
                    chip = chip[:, :, ::-1]
                strip[:, :, left : left + cols] = chip[:, :rows, :cols]
            if nodata_edge:
                nodata = _swath_nodata(slice(top, top + rows), slice(0, width), height, width)
                strip[:, nodata] = 0
            dst.write(strip, window=Window(0, top, width, rows))
    return Path(path)

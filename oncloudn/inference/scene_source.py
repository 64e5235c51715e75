"""A large raster read window by window: bands as separate files or one multi-band file.

:func:`open_scene` accepts

- a **folder** of single-band files found by band name (``B02.tif``, a SAFE product's
  ``T33UUU_..._B02_10m.jp2``; GeoTIFF or JPEG 2000): the folder is searched recursively, a
  band's 10 m file wins over its 20/60 m ones and ``QI_DATA`` masks are never taken;
- one **multi-band file**: bands chosen by index (``band_indices``, 1-based, in the model's
  band order), else by the file's band descriptions, else in file order when it has exactly
  as many bands as the model.

Every band must have the same size, CRS and transform. :meth:`SceneSource.read` returns raw
DN of one window as float32 ``[C, h, w]`` with the product's offset added (``DN + offset``,
clipped at 0; see ``scene_offset.py``) and the window's nodata mask (every band 0 in the
file's own DN, the On Cloud N nodata value).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from oncloudn.errors import ConfigError, DataError
from oncloudn.inference.scene_offset import find_product_metadata, read_product_offsets

logger = logging.getLogger(__name__)

BAND_EXTENSIONS = (".jp2", ".tif", ".tiff")
EXCLUDED_FOLDERS = ("QI_DATA",)


@dataclass
class SceneSource:
    """Band files of one scene and how to read them.

    Attributes:
        paths: One file per model band (the same file repeated for a multi-band file).
        indexes: The 1-based band index to read in each file.
        bands: The model's band names, in channel order.
        offsets: DN offset added to each band (``0`` for none).
        height: Rows of the scene.
        width: Columns of the scene.
        crs: The scene's CRS (``None`` when absent).
        transform: Its affine transform.
        offset_source: Where the offsets came from (``metadata path``, ``option``, ``none``).
    """

    paths: list[str]
    indexes: list[int]
    bands: list[str]
    offsets: list[float]
    height: int
    width: int
    crs: object = None
    transform: object = None
    offset_source: str = "none"
    _datasets: dict[str, object] = field(default_factory=dict, repr=False)

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw DN ``[C, height, width]`` (float32, offset applied) and its nodata mask."""
        window = Window(col, row, width, height)
        raw = np.empty((len(self.paths), height, width), np.float32)
        nodata = np.ones((height, width), bool)
        for channel, (path, index) in enumerate(zip(self.paths, self.indexes, strict=True)):
            band = self._dataset(path).read(index, window=window)
            nodata &= band == 0
            raw[channel] = band
            if self.offsets[channel]:
                raw[channel] += self.offsets[channel]
        if any(self.offsets):
            np.maximum(raw, 0.0, out=raw)
        return raw, nodata

    def _dataset(self, path: str):
        if path not in self._datasets:
            self._datasets[path] = rasterio.open(path)
        return self._datasets[path]

    def close(self) -> None:
        """Close the open files."""
        for dataset in self._datasets.values():
            dataset.close()
        self._datasets.clear()

    def files(self) -> list[str]:
        """The distinct files read."""
        return sorted(set(self.paths))


def _band_pattern(band: str) -> re.Pattern:
    return re.compile(rf"(?:^|[^0-9A-Za-z]){re.escape(band)}(?:[^0-9A-Za-z]|$)", re.IGNORECASE)


def _prefer_10m(candidates: list[Path]) -> list[Path]:
    finest = [path for path in candidates if "10m" in path.stem or path.parent.name == "R10m"]
    return finest or candidates


def find_band_files(folder: str | os.PathLike, bands: Sequence[str]) -> list[Path]:
    """One file per band in ``folder`` (searched recursively), found by band name.

    Raises:
        DataError: A band has no file, or several equally good ones.
    """
    folder = Path(folder)
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in BAND_EXTENSIONS
        and path.is_file()
        and not path.name.startswith(".")
        and not any(part in EXCLUDED_FOLDERS for part in path.relative_to(folder).parts)
    )
    found = []
    for band in bands:
        pattern = _band_pattern(band)
        candidates = _prefer_10m([path for path in files if pattern.search(path.stem)])
        if not candidates:
            raise DataError(
                f"{folder}: no file for band {band} (looked for *{band}*.jp2/.tif); pass the "
                f"folder holding the band files (e.g. a SAFE product's IMG_DATA/R10m)"
            )
        if len(candidates) > 1:
            names = ", ".join(str(path.relative_to(folder)) for path in candidates[:4])
            raise DataError(
                f"{folder}: several files for band {band} ({names}); pass the folder holding "
                f"just one of them"
            )
        found.append(candidates[0])
    return found


def _multiband_indexes(
    path: Path, descriptions: Sequence[str | None], bands: Sequence[str]
) -> list[int]:
    described = {str(text).upper(): i + 1 for i, text in enumerate(descriptions) if text}
    if all(band.upper() in described for band in bands):
        return [described[band.upper()] for band in bands]
    if len(descriptions) == len(bands):
        logger.warning(
            "%s: bands not named in the file; assuming the order %s", path, ",".join(bands)
        )
        return list(range(1, len(bands) + 1))
    raise ConfigError(
        f"{path}: {len(descriptions)} bands without the names {','.join(bands)}; pick them "
        f"with --band-indices (1-based, in the order {','.join(bands)})"
    )


def _resolve_offsets(
    scene: Path, bands: Sequence[str], offset: float | Sequence[float] | None
) -> tuple[list[float], str]:
    if offset is not None:
        values = [float(offset)] * len(bands) if np.isscalar(offset) else list(offset)
        if len(values) != len(bands):
            raise ConfigError(f"--offset needs 1 or {len(bands)} values, got {len(values)}")
        return [float(value) for value in values], "option"
    metadata = find_product_metadata(scene)
    if metadata is None:
        return [0.0] * len(bands), "none"
    return read_product_offsets(metadata, bands), str(metadata)


def _check_same_grid(paths: Sequence[str]) -> tuple[int, int, object, object]:
    grid = None
    for path in dict.fromkeys(paths):
        try:
            with rasterio.open(path) as dataset:
                this = (dataset.height, dataset.width, dataset.crs, dataset.transform)
        except RasterioIOError as error:
            raise DataError(f"{path}: cannot be read as a raster ({error})") from None
        if grid is None:
            grid = this
        elif this[:2] != grid[:2] or this[2] != grid[2] or this[3] != grid[3]:
            raise DataError(
                f"{path}: {this[0]} x {this[1]} on another grid than {paths[0]} "
                f"({grid[0]} x {grid[1]}); pass bands of one resolution (e.g. the 10 m ones)"
            )
    return grid


def open_scene(
    scene: str | os.PathLike,
    bands: Sequence[str],
    band_indices: Sequence[int] | None = None,
    offset: float | Sequence[float] | None = None,
) -> SceneSource:
    """Find a scene's band files and open them for window reads.

    Args:
        scene: A folder of band files or one multi-band raster.
        bands: The model's bands, in channel order.
        band_indices: For a multi-band file: the 1-based index of each band.
        offset: DN offset added before prediction (one value or one per band); default: the
            product metadata's (``MTD_MSIL2A.xml``), else none.

    Raises:
        FileNotFoundError: No such file or folder.
        DataError: Missing bands, bands on different grids, unreadable files.
        ConfigError: Band indices that do not fit.
    """
    scene = Path(scene)
    if not scene.exists():
        raise FileNotFoundError(f"{scene}: no such scene file or folder")
    if scene.is_dir():
        if band_indices:
            raise ConfigError("--band-indices applies to a multi-band file, not a folder")
        paths = [str(path) for path in find_band_files(scene, bands)]
        indexes = [1] * len(paths)
    else:
        paths = [str(scene)] * len(bands)
        try:
            with rasterio.open(scene) as dataset:
                descriptions, count = dataset.descriptions, dataset.count
        except RasterioIOError as error:
            raise DataError(f"{scene}: cannot be read as a raster ({error})") from None
        if band_indices:
            indexes = [int(index) for index in band_indices]
            if len(indexes) != len(bands) or not all(1 <= i <= count for i in indexes):
                raise ConfigError(
                    f"{scene}: --band-indices needs {len(bands)} values in 1..{count} "
                    f"(for {','.join(bands)}), got {list(band_indices)}"
                )
        else:
            indexes = _multiband_indexes(scene, descriptions, bands)
    height, width, crs, transform = _check_same_grid(paths)
    offsets, offset_source = _resolve_offsets(scene, bands, offset)
    return SceneSource(
        paths, indexes, list(bands), offsets, height, width, crs, transform, offset_source
    )

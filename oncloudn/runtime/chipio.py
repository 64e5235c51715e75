"""Read On Cloud N chips and write prediction masks (runtime-safe).

Layout: ``<features>/<chip_id>/B02.tif`` ... one single-band uint16 GeoTIFF per band, and
``<labels>/<chip_id>.tif`` (uint8, 1 = cloud). Values are surface reflectance x 10000 and are
never clipped here; 0 in every band marks nodata.
"""

import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Optional

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError

from .atomic import atomic_path
from .bands import BANDS, CHIP_SIZE  # noqa: F401 - CHIP_SIZE re-exported
from .errors import (
    ChipFormatError,
    ChipNotFoundError,
    CorruptTiffError,
    MissingBandError,
    MissingLabelError,
)
from .folders import folder_problem


def list_chip_ids(features_dir: str) -> list[str]:
    """Chip ids of a features folder: its non-hidden sub-folders, sorted.

    This is the set the competition runtime checks predictions against (not the CSV).

    Raises:
        FileNotFoundError: If ``features_dir`` is not a folder.
    """
    problem = folder_problem(
        features_dir, "features folder", "expected <root>/<split>_features/<chip_id>/B02.tif ..."
    )
    if problem:
        raise FileNotFoundError(problem)
    return sorted(
        name
        for name in os.listdir(features_dir)
        if not name.startswith(".") and os.path.isdir(os.path.join(features_dir, name))
    )


MAX_BAND_PIXELS = 10980 * 10980
"""Most pixels a band or label file may declare: a whole Sentinel-2 tile at 10 m. A header
declaring more (100,000 x 100,000 would need 18.6 GiB) is refused before anything is read."""

_GDAL_LOGGERS = ("rasterio._err", "rasterio._env")


class _GdalMessages(logging.Filter):
    """Keeps GDAL's messages out of the log while this thread reads a file, and remembers them.

    rasterio reports a failed read as "Read failed. See previous exception for details."; the
    real reason (e.g. "Read error at scanline 240; got 6874 bytes, expected 7234") is only in
    GDAL's messages, which rasterio logs. They become part of the chip's error instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        messages = getattr(self.local, "messages", None)
        if messages is None or record.levelno < logging.INFO:
            # Outside a read, the level the application gave "rasterio" decides.
            return logging.getLogger("rasterio").isEnabledFor(record.levelno)
        messages.append(record.getMessage())
        return False

    @contextmanager
    def capture(self) -> Iterator[list]:
        previous = getattr(self.local, "messages", None)
        self.local.messages = []
        try:
            yield self.local.messages
        finally:
            self.local.messages = previous


def _install_gdal_filter() -> _GdalMessages:
    for name in _GDAL_LOGGERS:
        for existing in logging.getLogger(name).filters:
            if type(existing).__name__ == _GdalMessages.__name__:
                return existing  # the module was imported twice (e.g. vendored and not)
    gdal = _GdalMessages()
    for name in _GDAL_LOGGERS:
        logger = logging.getLogger(name)
        logger.addFilter(gdal)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)  # GDAL's errors reach the filter, not the log
    return gdal


_GDAL = _install_gdal_filter()


def _gdal_reason(error: Exception, messages: Sequence[str]) -> str:
    """The most telling reason of a rasterio error: GDAL's first message, else the error's."""
    for message in messages:
        found = re.search(r"msg=(['\"])(.*)\1\s*$", message)
        text = (found.group(2) if found else message).strip()
        if text and "See previous exception" not in text:
            return text
    cause = error.__cause__ or error.__context__
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "See previous exception" in text and cause is not None:
        return str(cause).splitlines()[0]
    return text


def _check_header(src, path: str, chip_id: str, kind: str, size: Optional[int]) -> None:
    """Refuse a file by what its header declares, before any pixel is read."""
    if src.count != 1:
        raise ChipFormatError(
            chip_id,
            path,
            f"{kind} has {src.count} bands, expected 1",
            "On Cloud N stores one band per file",
        )
    height, width = src.height, src.width
    if height * width > MAX_BAND_PIXELS:
        raise ChipFormatError(
            chip_id,
            path,
            f"{kind} declares {width:,} x {height:,} pixels, more than a whole Sentinel-2 tile "
            f"({MAX_BAND_PIXELS:,} pixels); not read",
            "On Cloud N chips are 512 x 512: the file is damaged or not a chip",
        )
    if size is not None and (height, width) != (size, size):
        raise ChipFormatError(
            chip_id, path, f"{kind} has shape {(height, width)}, expected ({size}, {size})"
        )


def _open(path: str, chip_id: str, kind: str):
    with _GDAL.capture() as messages:
        try:
            return rasterio.open(path)
        except RasterioIOError as error:
            raise CorruptTiffError(
                chip_id,
                path,
                f"{kind} cannot be decoded as a GeoTIFF ({_gdal_reason(error, messages)})",
                "re-download or regenerate this file",
            ) from None


def _read_open(src, path: str, chip_id: str, kind: str) -> np.ndarray:
    with _GDAL.capture() as messages:
        try:
            return src.read(1)
        except (RasterioIOError, RasterioError) as error:
            raise CorruptTiffError(
                chip_id,
                path,
                f"{kind} pixel data cannot be decoded ({_gdal_reason(error, messages)}); the "
                "file is truncated or corrupt",
                "re-download or regenerate this file",
            ) from None


def _read_single_band(
    path: str, chip_id: str, kind: str, size: Optional[int] = None
) -> tuple[np.ndarray, dict]:
    with _open(path, chip_id, kind) as src:
        _check_header(src, path, chip_id, kind, size)
        array = _read_open(src, path, chip_id, kind)
        profile = {"crs": src.crs, "transform": src.transform, "nodata": src.nodata}
    return array, profile


def _odd_band(shapes: dict) -> str:
    """The band whose shape differs from the others' (the later one when there is no majority)."""
    counts: dict = {}
    for shape in shapes.values():
        counts[shape] = counts.get(shape, 0) + 1
    common = max(counts, key=lambda shape: counts[shape])  # first seen wins a tie
    return next(band for band, shape in shapes.items() if shape != common)


def _band_path(chip_dir: str, chip_id: str, band: str, bands: Sequence[str]) -> str:
    path = os.path.join(chip_dir, band + ".tif")
    if not os.path.exists(path):
        raise MissingBandError(
            chip_id,
            path,
            f"band {band} is missing",
            "every chip needs {}".format(", ".join(b + ".tif" for b in bands)),
        )
    return path


def _check_bands(sources: dict, paths: dict, chip_id: str, size: Optional[int]) -> None:
    """Header checks of every band (count, size, dtype, equal shapes) before any read."""
    for band, src in sources.items():
        _check_header(src, paths[band], chip_id, "band " + band, size)
        if src.dtypes[0] != "uint16":
            raise ChipFormatError(
                chip_id,
                paths[band],
                f"band {band} has dtype {src.dtypes[0]}, expected uint16 (reflectance x 10000)",
            )
    shapes = {band: (src.height, src.width) for band, src in sources.items()}
    if len(set(shapes.values())) > 1:
        odd = _odd_band(shapes)
        others = ", ".join(f"{b} {s}" for b, s in shapes.items() if b != odd)
        raise ChipFormatError(
            chip_id, paths[odd], f"band {odd} has shape {shapes[odd]}, other bands: {others}"
        )


def read_bands(
    chip_dir: str,
    bands: Sequence[str] = BANDS,
    with_profile: bool = False,
    size: Optional[int] = None,
) -> "np.ndarray | tuple[np.ndarray, dict]":
    """Read the chosen bands of one chip, in the given order, as raw uint16 ``[C, H, W]``.

    Every file's header is checked before any pixel is read: one band, uint16, at most
    :data:`MAX_BAND_PIXELS` pixels (``size`` x ``size`` when given), all bands of one shape
    (the band that differs from the others is the one named).

    Args:
        chip_dir: The chip's folder (``<features>/<chip_id>``).
        bands: Band names in the order wanted.
        with_profile: Also return ``{'crs', 'transform'}`` of the first band.
        size: The side every band must have (e.g. 512), or ``None`` for any.

    Raises:
        ChipNotFoundError: The folder does not exist.
        MissingBandError: A band file is absent.
        CorruptTiffError: A band file cannot be decoded (GDAL's reason is in the message).
        ChipFormatError: Bands are not single-band uint16 of equal (and allowed) shape.
    """
    chip_id = os.path.basename(os.path.normpath(chip_dir))
    if not os.path.isdir(chip_dir):
        raise ChipNotFoundError(
            chip_id, chip_dir, "chip folder does not exist", "check the chip id and root"
        )
    paths = {band: _band_path(chip_dir, chip_id, band, bands) for band in bands}
    with ExitStack() as stack:
        sources = {
            band: stack.enter_context(_open(paths[band], chip_id, "band " + band)) for band in bands
        }
        _check_bands(sources, paths, chip_id, size)
        arrays = [
            _read_open(src, paths[band], chip_id, "band " + band) for band, src in sources.items()
        ]
        first = sources[bands[0]] if bands else None
        profile = (
            {"crs": first.crs, "transform": first.transform, "nodata": first.nodata}
            if first is not None
            else {}
        )
    stacked = np.stack(arrays)
    if with_profile:
        return stacked, profile
    return stacked


def read_label(label_path: str, chip_id: Optional[str] = None) -> np.ndarray:
    """Read a label as uint8 ``[H, W]`` with values as stored (1 = cloud; 255 may mark nodata).

    Raises:
        MissingLabelError: The file does not exist.
        CorruptTiffError: It cannot be decoded.
        ChipFormatError: It is not single-band or declares more than :data:`MAX_BAND_PIXELS`.
    """
    chip_id = chip_id or os.path.splitext(os.path.basename(label_path))[0]
    if not os.path.exists(label_path):
        raise MissingLabelError(
            chip_id,
            label_path,
            "label is missing",
            "expected <root>/<split>_labels/<chip_id>.tif",
        )
    array, _ = _read_single_band(label_path, chip_id, "label")
    return array.astype(np.uint8, copy=False)


def nodata_mask(bands: np.ndarray) -> np.ndarray:
    """``True`` where every band is 0 (the On Cloud N nodata value). Works on ``[C, H, W]``."""
    return np.all(bands == 0, axis=0)


def write_mask(
    path: str,
    mask: np.ndarray,
    crs: object = None,
    transform: object = None,
) -> None:
    """Write a uint8 ``[H, W]`` mask as an uncompressed single-band GeoTIFF, atomically.

    The file is written to a hidden temporary sibling and renamed into place
    (:func:`oncloudn.runtime.atomic.atomic_path`), so a crash never leaves a partial file,
    nor an extra file in the target folder. PIL and tifffile both read the result.
    """
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    profile = {
        "driver": "GTiff",
        "height": mask.shape[0],
        "width": mask.shape[1],
        "count": 1,
        "dtype": "uint8",
        "compress": None,
        "tiled": False,
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    _atomic_raster_write(path, mask, profile)


def write_probability(path: str, probability: np.ndarray, crs=None, transform=None) -> None:
    """Write a float32 ``[H, W]`` probability map as a deflate-compressed GeoTIFF, atomically."""
    probability = np.ascontiguousarray(probability, dtype=np.float32)
    profile = {
        "driver": "GTiff",
        "height": probability.shape[0],
        "width": probability.shape[1],
        "count": 1,
        "dtype": "float32",
        "compress": "deflate",
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    _atomic_raster_write(path, probability, profile)


def _atomic_raster_write(path: str, array: np.ndarray, profile: dict) -> None:
    # The hidden temporary sibling stays out of the prediction folder's listing, is on the
    # same filesystem (the final rename is atomic) and is removed if the write fails.
    with atomic_path(path) as temp_path, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(temp_path, "w", **profile) as dst:
            dst.write(array, 1)

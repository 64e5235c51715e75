"""Read On Cloud N chips and write prediction masks (runtime-safe).

Layout: ``<features>/<chip_id>/B02.tif`` ... one single-band uint16 GeoTIFF per band, and
``<labels>/<chip_id>.tif`` (uint8, 1 = cloud). Values are surface reflectance x 10000 and are
never clipped here; 0 in every band marks nodata.
"""

import os
import warnings
from collections.abc import Sequence
from typing import Optional

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from .atomic import atomic_path
from .bands import BANDS, CHIP_SIZE  # noqa: F401 - CHIP_SIZE re-exported
from .errors import (
    ChipFormatError,
    ChipNotFoundError,
    CorruptTiffError,
    MissingBandError,
    MissingLabelError,
)


def list_chip_ids(features_dir: str) -> list[str]:
    """Chip ids of a features folder: its non-hidden sub-folders, sorted.

    This is the set the competition runtime checks predictions against (not the CSV).

    Raises:
        FileNotFoundError: If ``features_dir`` is not a folder.
    """
    if not os.path.isdir(features_dir):
        raise FileNotFoundError(
            f"features folder {str(features_dir)!r} does not exist; expected "
            "<root>/<split>_features/<chip_id>/B02.tif ..."
        )
    return sorted(
        name
        for name in os.listdir(features_dir)
        if not name.startswith(".") and os.path.isdir(os.path.join(features_dir, name))
    )


def _read_single_band(path: str, chip_id: str, kind: str) -> tuple[np.ndarray, dict]:
    try:
        with rasterio.open(path) as src:
            if src.count != 1:
                raise ChipFormatError(
                    chip_id,
                    path,
                    f"{kind} has {src.count} bands, expected 1",
                    "On Cloud N stores one band per file",
                )
            array = src.read(1)
            profile = {"crs": src.crs, "transform": src.transform, "nodata": src.nodata}
    except RasterioIOError as error:
        raise CorruptTiffError(
            chip_id,
            path,
            f"{kind} cannot be decoded as a GeoTIFF ({str(error).splitlines()[0]})",
            "re-download or regenerate this file",
        ) from None
    return array, profile


def read_bands(
    chip_dir: str, bands: Sequence[str] = BANDS, with_profile: bool = False
) -> "np.ndarray | tuple[np.ndarray, dict]":
    """Read the chosen bands of one chip, in the given order, as raw uint16 ``[C, H, W]``.

    Args:
        chip_dir: The chip's folder (``<features>/<chip_id>``).
        bands: Band names in the order wanted.
        with_profile: Also return ``{'crs', 'transform'}`` of the first band.

    Raises:
        ChipNotFoundError: The folder does not exist.
        MissingBandError: A band file is absent.
        CorruptTiffError: A band file cannot be decoded.
        ChipFormatError: Bands are not single-band uint16 of equal shape.
    """
    chip_id = os.path.basename(os.path.normpath(chip_dir))
    if not os.path.isdir(chip_dir):
        raise ChipNotFoundError(
            chip_id, chip_dir, "chip folder does not exist", "check the chip id and root"
        )
    arrays = []
    profile: dict[str, object] = {}
    for band in bands:
        path = os.path.join(chip_dir, band + ".tif")
        if not os.path.exists(path):
            raise MissingBandError(
                chip_id,
                path,
                f"band {band} is missing",
                "every chip needs {}".format(", ".join(b + ".tif" for b in bands)),
            )
        array, band_profile = _read_single_band(path, chip_id, "band " + band)
        if array.dtype != np.uint16:
            raise ChipFormatError(
                chip_id,
                path,
                f"band {band} has dtype {array.dtype}, expected uint16 (reflectance x 10000)",
            )
        if arrays and array.shape != arrays[0].shape:
            raise ChipFormatError(
                chip_id,
                path,
                f"band {band} has shape {array.shape}, other bands {arrays[0].shape}",
            )
        if not profile:
            profile = band_profile
        arrays.append(array)
    stacked = np.stack(arrays)
    if with_profile:
        return stacked, profile
    return stacked


def read_label(label_path: str, chip_id: Optional[str] = None) -> np.ndarray:
    """Read a label as uint8 ``[H, W]`` with values as stored (1 = cloud; 255 may mark nodata).

    Raises:
        MissingLabelError: The file does not exist.
        CorruptTiffError: It cannot be decoded.
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

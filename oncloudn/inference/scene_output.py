"""Scene outputs: tiled, compressed GeoTIFFs written strip by strip.

- the **mask**: uint8 0/1 (nodata pixels 0, no nodata value declared: 0 is also "clear"),
  512 x 512 tiles, deflate;
- optional **probabilities**: ``uint8`` (cloud probability x 254, rounded; 255 = nodata,
  declared) or ``float32`` (``NaN`` = nodata, declared; floating-point predictor). GDAL 3.10,
  the version rasterio ships here, cannot write float16 GeoTIFFs, so there is no float16.

Both carry the input's CRS and transform. Each is written to a temporary path chosen by the
caller and renamed into place once complete.
"""

from __future__ import annotations

import os
import warnings
from contextlib import ExitStack

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from oncloudn.errors import ConfigError

PROBABILITY_DTYPES = ("uint8", "float32")
UINT8_SCALE = 254
UINT8_NODATA = 255
TILE = 512


def _profile(height: int, width: int, crs, transform, dtype: str, nodata) -> dict:
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 1,
        "dtype": dtype,
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    if dtype == "float32":
        profile["predictor"] = 3
    if nodata is not None:
        profile["nodata"] = nodata
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    return profile


def encode_probability(probability: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities (``NaN`` = nodata) in the output's dtype (see the module docstring)."""
    if dtype == "float32":
        return probability.astype(np.float32, copy=False)
    nodata = np.isnan(probability)
    encoded = np.rint(np.nan_to_num(probability) * UINT8_SCALE).astype(np.uint8)
    encoded[nodata] = UINT8_NODATA
    return encoded


class SceneWriter:
    """Open mask (and probability) GeoTIFFs and write them strip by strip.

    Args:
        mask_path: Where the mask goes (a temporary path).
        height: Scene rows.
        width: Scene columns.
        crs: The input's CRS.
        transform: The input's transform.
        probability_path: Where probabilities go (``None``: none).
        probability_dtype: ``uint8`` or ``float32``.

    Raises:
        ConfigError: An unknown probability dtype.
    """

    def __init__(
        self,
        mask_path: str | os.PathLike,
        height: int,
        width: int,
        crs=None,
        transform=None,
        probability_path: str | os.PathLike | None = None,
        probability_dtype: str = "uint8",
    ):
        if probability_dtype not in PROBABILITY_DTYPES:
            raise ConfigError(
                f"unknown probability dtype {probability_dtype!r}; choose one of: "
                f"{', '.join(PROBABILITY_DTYPES)} (GDAL here cannot write float16)"
            )
        self.probability_dtype = probability_dtype
        self._stack = ExitStack()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            profile = _profile(height, width, crs, transform, "uint8", None)
            self.mask = self._stack.enter_context(rasterio.open(mask_path, "w", **profile))
            self.probability = None
            if probability_path is not None:
                nodata = UINT8_NODATA if probability_dtype == "uint8" else float("nan")
                profile = _profile(height, width, crs, transform, probability_dtype, nodata)
                self.probability = self._stack.enter_context(
                    rasterio.open(probability_path, "w", **profile)
                )

    def write(self, row: int, mask: np.ndarray, probability: np.ndarray | None = None) -> None:
        """Write rows starting at ``row``: the mask and, if open, the probabilities."""
        window = Window(0, row, mask.shape[1], mask.shape[0])
        self.mask.write(mask.astype(np.uint8, copy=False), 1, window=window)
        if self.probability is not None and probability is not None:
            encoded = encode_probability(probability, self.probability_dtype)
            self.probability.write(encoded, 1, window=window)

    def close(self) -> None:
        """Close the files (flushing them)."""
        self._stack.close()

    def __enter__(self) -> SceneWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

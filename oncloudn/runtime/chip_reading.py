"""Reading chips for prediction, and the fallback for chips the model cannot handle.

Runtime-safe. ``load_chip`` never raises (it returns the exception, so a worker thread can
read ahead); ``fallback_mask`` is the threshold rule on whatever bands can be read, and
``profile_quietly`` the georeference of any readable band, so a fallback mask keeps it.
"""

import logging
import os
from collections.abc import Sequence
from typing import Optional

import numpy as np

from .bands import BANDS, CHIP_SIZE
from .chipio import nodata_mask, read_bands
from .threshold import THRESHOLD_BANDS, threshold_cloud_score

LOGGER = logging.getLogger(__name__)


def load_chip(
    features_dir: str, chip_id: str, bands: Sequence[str], chip_size: Optional[int] = CHIP_SIZE
):
    """``(raw [C, H, W] uint16, profile)`` of a chip, or the exception that prevented it.

    ``chip_size`` (when not ``None``) is the side every chip must have. Safe to run in a
    worker thread: it has no side effects.
    """
    chip_dir = os.path.join(features_dir, chip_id)
    try:
        # The declared size is checked before reading: a header claiming 20,000 x 20,000
        # pixels costs nothing.
        raw, profile = read_bands(chip_dir, bands, with_profile=True, size=chip_size)
    except Exception as error:  # noqa: BLE001 - one chip must never stop the run
        return error
    return raw, profile


def _read_band_quietly(chip_dir: str, band: str, size: Optional[int]) -> Optional[np.ndarray]:
    try:
        return read_bands(chip_dir, [band], size=size)[0]
    except Exception:  # noqa: BLE001 - any unreadable band is simply absent
        return None


def fallback_mask(chip_dir: str, chip_size: Optional[int] = CHIP_SIZE) -> np.ndarray:
    """A valid uint8 mask for a chip the model cannot handle.

    The threshold rule on the bands that can be read: it needs B02, B03 and B04 of one shape
    (``chip_size`` x ``chip_size`` when given); a missing B08 is replaced by B04 (which passes
    the NIR-ratio test). With fewer bands, or on any error, the mask is all zeros (clear), of
    the readable bands' shape or else ``chip_size`` (512 when ``None``). Nodata pixels are 0.
    It reads the rule's own bands whatever the model's bands are.

    Args:
        chip_dir: The chip's folder.
        chip_size: The side every mask must have (``main.py``: 512), or ``None`` for any.
    """
    arrays = {band: _read_band_quietly(chip_dir, band, chip_size) for band in THRESHOLD_BANDS}
    shapes = {array.shape for array in arrays.values() if array is not None}
    if chip_size is not None:
        shapes &= {(chip_size, chip_size)}
    shape = shapes.pop() if len(shapes) == 1 else (chip_size or CHIP_SIZE,) * 2
    arrays = {b: a for b, a in arrays.items() if a is not None and a.shape == shape}
    if any(band not in arrays for band in THRESHOLD_BANDS[:3]):
        return np.zeros(shape, np.uint8)
    arrays.setdefault("B08", arrays["B04"])
    raw = np.stack([arrays[band] for band in THRESHOLD_BANDS])
    try:
        score = threshold_cloud_score(raw)
    except Exception:  # noqa: BLE001 - the fallback itself must never fail
        LOGGER.exception("threshold fallback failed on %s", chip_dir)
        return np.zeros(shape, np.uint8)
    mask = (score >= 0.5) & ~nodata_mask(raw)
    return mask.astype(np.uint8)


def profile_quietly(chip_dir: str, chip_size: Optional[int] = None) -> Optional[dict]:
    """The georeference of the first band that reads (of side ``chip_size`` when given)."""
    for band in BANDS:
        try:
            return read_bands(chip_dir, [band], with_profile=True, size=chip_size)[1]
        except Exception:  # noqa: BLE001 - any readable band will do
            continue
    return None

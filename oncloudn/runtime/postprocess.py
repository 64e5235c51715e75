"""Pixel- and chip-level post-processing of a cloud probability map (runtime-safe).

``postprocess`` runs these steps in a fixed order; each is a small function here, and each is
off by default (``PostprocessSpec()`` and ``ChipRules()`` mean "threshold only"):

1. ``smooth``: Gaussian smoothing of the probability (``smoothing_sigma`` pixels);
2. ``binarize``: ``probability >= threshold``;
3. ``opening`` -> 4. ``closing`` -> 5. ``dilation`` -> 6. ``erosion``: binary morphology
   with a disk of the given radius (the mask is edge-padded, so clouds touching the chip
   border are not eroded by the border);
7. ``remove_small_objects``: cloud components (8-connected) smaller than ``min_area`` pixels
   become clear;
8. ``fill_small_holes``: clear components (4-connected) not touching the border and at most
   ``max_hole_area`` pixels become cloud;
9. ``apply_chip_rules``: cloud fraction over valid pixels below ``min_cloud_fraction`` -> all
   clear; at or above ``full_cloud_fraction`` -> all cloud;
10. nodata pixels set to 0.
"""

from typing import Optional

import numpy as np
from scipy import ndimage

from .manifest import ChipRules, PostprocessSpec

_EIGHT = np.ones((3, 3), dtype=bool)


def disk(radius: int) -> np.ndarray:
    """A boolean disk structuring element of the given radius (``2r+1`` square)."""
    radius = int(radius)
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (yy * yy + xx * xx) <= radius * radius


def smooth(probability: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smoothed probability (``sigma <= 0``: unchanged)."""
    if sigma <= 0:
        return probability
    return ndimage.gaussian_filter(probability.astype(np.float32), float(sigma), mode="nearest")


def binarize(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask ``probability >= threshold``."""
    return probability >= threshold


def _morph(mask: np.ndarray, radius: int, operation) -> np.ndarray:
    if radius <= 0:
        return mask
    padded = np.pad(mask, radius, mode="edge")
    result = operation(padded, structure=disk(radius))
    return result[radius:-radius, radius:-radius]


def opening(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary opening with a disk (removes specks thinner than the disk)."""
    return _morph(mask, radius, ndimage.binary_opening)


def closing(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing with a disk (closes gaps narrower than the disk)."""
    return _morph(mask, radius, ndimage.binary_closing)


def dilation(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation with a disk (grows clouds by ``radius`` pixels)."""
    return _morph(mask, radius, ndimage.binary_dilation)


def erosion(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion with a disk (shrinks clouds by ``radius`` pixels)."""
    return _morph(mask, radius, ndimage.binary_erosion)


def remove_small_objects(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 8-connected cloud components smaller than ``min_area`` pixels."""
    if min_area <= 1 or not mask.any():
        return mask
    labels, count = ndimage.label(mask, structure=_EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_area
    keep[0] = False
    return keep[labels]


def fill_small_holes(mask: np.ndarray, max_hole_area: int) -> np.ndarray:
    """Fill 4-connected clear regions enclosed by cloud of at most ``max_hole_area`` pixels.

    Regions touching the chip border are not holes.
    """
    if max_hole_area <= 0 or mask.all() or not mask.any():
        return mask
    labels, count = ndimage.label(~mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    fill = sizes <= max_hole_area
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill[border] = False
    fill[0] = False
    return mask | fill[labels]


def apply_chip_rules(mask: np.ndarray, valid: Optional[np.ndarray], rules: ChipRules) -> np.ndarray:
    """All clear below ``min_cloud_fraction``, all cloud at or above ``full_cloud_fraction``.

    The fraction is computed over valid pixels (``valid`` True); a chip without valid pixels
    is left as is (the nodata step clears it).
    """
    values = mask if valid is None else mask[valid]
    if values.size == 0:
        return mask
    fraction = float(values.mean())
    if fraction < rules.min_cloud_fraction:
        return np.zeros_like(mask)
    if rules.full_cloud_fraction <= 1.0 and fraction >= rules.full_cloud_fraction:
        return np.ones_like(mask)
    return mask


def postprocess_pixels(
    probability: np.ndarray,
    nodata: Optional[np.ndarray],
    threshold: float,
    spec: Optional[PostprocessSpec] = None,
) -> np.ndarray:
    """Steps 1-8: a boolean cloud mask of a probability ``[H, W]`` (no chip-level rules).

    Args:
        probability: Cloud probability ``[H, W]``.
        nodata: ``True`` where the input has no data (or ``None``); only its shape is checked
            here (nodata pixels are cleared after the chip-level rules).
        threshold: Probability threshold (``>=`` is cloud).
        spec: Pixel-level steps (default: none).

    Raises:
        ValueError: ``probability`` is not 2-D or ``nodata`` has another shape.
    """
    spec = spec or PostprocessSpec()
    probability = np.asarray(probability)
    if probability.ndim != 2:
        raise ValueError(f"probability must be [H, W], got shape {probability.shape}")
    if nodata is not None and nodata.shape != probability.shape:
        raise ValueError(
            f"nodata shape {nodata.shape} differs from probability shape {probability.shape}"
        )
    mask = binarize(smooth(probability, spec.smoothing_sigma), threshold)
    mask = opening(mask, spec.opening)
    mask = closing(mask, spec.closing)
    mask = dilation(mask, spec.dilation)
    mask = erosion(mask, spec.erosion)
    mask = remove_small_objects(mask, spec.min_area)
    return fill_small_holes(mask, spec.max_hole_area)


def postprocess(
    probability: np.ndarray,
    nodata: Optional[np.ndarray],
    threshold: float,
    spec: Optional[PostprocessSpec] = None,
    rules: Optional[ChipRules] = None,
) -> np.ndarray:
    """Turn a cloud probability ``[H, W]`` into a uint8 mask in {0, 1}, in the fixed order.

    :func:`postprocess_pixels`, then :func:`apply_chip_rules`, then nodata pixels set to 0.

    Args:
        probability: Cloud probability ``[H, W]``.
        nodata: ``True`` where the chip has no data (or ``None``).
        threshold: Probability threshold (``>=`` is cloud).
        spec: Pixel-level steps (default: none).
        rules: Chip-level rules (default: none, e.g. for windows of a larger scene).

    Raises:
        ValueError: ``probability`` is not 2-D or ``nodata`` has another shape.
    """
    mask = postprocess_pixels(probability, nodata, threshold, spec)
    valid = None if nodata is None else ~nodata
    mask = apply_chip_rules(mask, valid, rules or ChipRules())
    if nodata is not None:
        mask = mask & valid
    return mask.astype(np.uint8)

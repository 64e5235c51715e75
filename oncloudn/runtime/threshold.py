"""A classic Sentinel-2 cloud thresholding rule on B02, B03, B04, B08 (runtime-safe).

Four bands cannot tell clouds from snow (that needs SWIR), but these tests, adapted from the
spectral tests of Fmask (Zhu & Woodcock 2012) to the bands On Cloud N provides, separate
bright, white clouds from vegetation, soil and water. Reflectance ``r = DN / scale``;
``vis = mean(B02, B03, B04)``:

1. brightness: ``vis > brightness`` (clouds are bright in the visible);
2. whiteness (spectral flatness): ``sum(|b - vis|) / vis < whiteness`` over the visible
   bands (clouds are white, soil is red, vegetation green);
3. NIR ratio: ``nir_ratio_min < B08 / B04 < nir_ratio_max`` (about 1 for clouds, far above
   for vegetation, below for water);
4. haze (HOT-like): ``B02 - 0.5 * B04 - hot_offset > 0`` together with the NIR-ratio test and
   ``vis > haze_brightness`` flags thin, hazy clouds that fail the brightness test.

``cloud = (1 and 2 and 3) or 4``. Each test is made soft with a logistic function of width
``*_softness`` (in the test's own units), so the score is a probability-like value in
``[0, 1]`` that crosses 0.5 where the hard rule flips; it can be ensembled and thresholded
like a network's probability. Nodata pixels (all bands 0) score 0.
"""

from typing import Optional, Union

import numpy as np
import torch

from .bands import BANDS, REFLECTANCE_SCALE

# The bands the rule reads, in this order: the four bands of every chip.
THRESHOLD_BANDS = BANDS

THRESHOLD_DEFAULTS: dict[str, float] = {
    # DN per unit reflectance (L2A surface reflectance x 10000).
    "scale": REFLECTANCE_SCALE,
    # Test 1: mean visible reflectance above this is "bright".
    "brightness": 0.22,
    "brightness_softness": 0.02,
    # Test 2: whiteness (sum of relative deviations from the visible mean) below this
    # (Fmask uses 0.7 over more bands; 0.4 keeps bright reddish soil out).
    "whiteness": 0.4,
    "whiteness_softness": 0.05,
    # Test 3: B08 / B04 inside (min, max): vegetation > 2, water < 0.7, clouds about 1.
    "nir_ratio_min": 0.7,
    "nir_ratio_max": 1.6,
    "nir_ratio_softness": 0.05,
    # Test 4: haze optimised transform B02 - 0.5 * B04 above this offset (Fmask: 0.08) ...
    "hot_offset": 0.08,
    "hot_softness": 0.01,
    # ... for pixels at least this bright (keeps dark water out of the haze test).
    "haze_brightness": 0.12,
}


def threshold_params(params: Optional[dict] = None) -> dict[str, float]:
    """``THRESHOLD_DEFAULTS`` updated with ``params``.

    Raises:
        ValueError: A key that is not a rule parameter (the message lists the valid ones).
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(THRESHOLD_DEFAULTS))
    if unknown:
        raise ValueError(
            "unknown threshold rule parameters {}; valid: {}".format(
                unknown, ", ".join(sorted(THRESHOLD_DEFAULTS))
            )
        )
    merged = dict(THRESHOLD_DEFAULTS)
    merged.update({k: float(v) for k, v in params.items()})
    return merged


def _soft_greater(value: torch.Tensor, limit: float, softness: float) -> torch.Tensor:
    return torch.sigmoid((value - limit) / max(softness, 1e-9))


def _score(x: torch.Tensor, p: dict[str, float]) -> torch.Tensor:
    x = x.float()
    valid = (x != 0).any(dim=1)
    r = x / p["scale"]
    blue, green, red, nir = r[:, 0], r[:, 1], r[:, 2], r[:, 3]
    vis = (blue + green + red) / 3.0
    eps = 1e-6
    whiteness = ((blue - vis).abs() + (green - vis).abs() + (red - vis).abs()) / (vis + eps)
    ratio = (nir + eps) / (red + eps)
    bright = _soft_greater(vis, p["brightness"], p["brightness_softness"])
    white = _soft_greater(-whiteness, -p["whiteness"], p["whiteness_softness"])
    ratio_ok = _soft_greater(ratio, p["nir_ratio_min"], p["nir_ratio_softness"]) * (
        _soft_greater(-ratio, -p["nir_ratio_max"], p["nir_ratio_softness"])
    )
    hot = _soft_greater(blue - 0.5 * red, p["hot_offset"], p["hot_softness"])
    hazy = _soft_greater(vis, p["haze_brightness"], p["brightness_softness"])
    core = bright * white * ratio_ok
    haze = hot * ratio_ok * hazy
    return torch.max(core, haze) * valid.float()


def threshold_cloud_score(
    raw: Union[np.ndarray, torch.Tensor], params: Optional[dict] = None
) -> Union[np.ndarray, torch.Tensor]:
    """Probability-like cloud score ``[N, H, W]`` of raw DN ``[N, 4, H, W]`` (B02, B03, B04, B08).

    A ``[4, H, W]`` input gives ``[H, W]``. NumPy in, NumPy (float32) out; a tensor in gives a
    tensor on the same device.

    Args:
        raw: Raw DN (uint16 or float) in band order B02, B03, B04, B08.
        params: Overrides of ``THRESHOLD_DEFAULTS``.

    Raises:
        ValueError: Not 4 bands, or unknown parameters.
    """
    p = threshold_params(params)
    is_numpy = isinstance(raw, np.ndarray)
    x = torch.from_numpy(np.asarray(raw, dtype=np.float32)) if is_numpy else raw
    single = x.dim() == 3
    if single:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 4:
        raise ValueError(
            "the threshold rule needs raw DN [N, 4, H, W] in band order {}, got shape {}".format(
                ", ".join(THRESHOLD_BANDS), tuple(raw.shape)
            )
        )
    score = _score(x, p)
    if single:
        score = score[0]
    return score.numpy() if is_numpy else score

"""The classic Sentinel-2 threshold rule on synthetic pixels."""

import numpy as np
import pytest
import torch

from oncloudn.runtime.threshold import THRESHOLD_DEFAULTS, threshold_cloud_score

# Typical L2A DN (reflectance x 10000) in band order B02, B03, B04, B08.
CLOUDS = {
    "thick cloud": [5000, 5100, 5200, 5400],
    "bright cloud": [9000, 9100, 9300, 9500],
    "thin hazy cloud": [1900, 1700, 1500, 1700],
}
CLEAR = {
    "vegetation": [300, 600, 400, 3500],
    "dark forest": [200, 350, 250, 2500],
    "water": [700, 500, 300, 150],
    "bare soil": [900, 1300, 1900, 2500],
    "bright red soil": [2000, 2800, 3600, 4200],
    "urban": [1100, 1150, 1200, 2000],
}


def _pixels(table: dict) -> np.ndarray:
    return np.array(list(table.values()), np.uint16).T.reshape(1, 4, 1, -1)


def test_clouds_score_high_and_ground_low() -> None:
    cloud = threshold_cloud_score(_pixels(CLOUDS))[0, 0]
    clear = threshold_cloud_score(_pixels(CLEAR))[0, 0]
    assert (cloud > 0.8).all(), dict(zip(CLOUDS, cloud, strict=True))
    assert (clear < 0.2).all(), dict(zip(CLEAR, clear, strict=True))


def test_nodata_scores_zero_and_range() -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 20000, (2, 4, 8, 8)).astype(np.uint16)
    raw[:, :, 0, 0] = 0
    score = threshold_cloud_score(raw)
    assert score.shape == (2, 8, 8) and score.dtype == np.float32
    assert (score[:, 0, 0] == 0).all()
    assert score.min() >= 0 and score.max() <= 1


def test_tensor_in_tensor_out_matches_numpy() -> None:
    raw = _pixels(CLOUDS)
    from_numpy = threshold_cloud_score(raw)
    from_tensor = threshold_cloud_score(torch.from_numpy(raw.astype(np.float32)))
    assert isinstance(from_tensor, torch.Tensor)
    np.testing.assert_allclose(from_tensor.numpy(), from_numpy, atol=1e-6)
    assert threshold_cloud_score(raw[0]).shape == (1, 3)


def test_parameters_change_the_decision_and_are_checked() -> None:
    cloud = _pixels({"thick cloud": CLOUDS["thick cloud"]})
    assert threshold_cloud_score(cloud)[0, 0, 0] > 0.5
    strict = {"brightness": 0.6, "haze_brightness": 0.6}
    assert threshold_cloud_score(cloud, strict)[0, 0, 0] < 0.5
    with pytest.raises(ValueError, match="brightness"):
        threshold_cloud_score(cloud, {"brightnes": 0.3})
    with pytest.raises(ValueError, match="B02, B03, B04, B08"):
        threshold_cloud_score(np.zeros((1, 3, 2, 2), np.uint16))
    assert set(THRESHOLD_DEFAULTS) >= {"brightness", "whiteness", "hot_offset"}

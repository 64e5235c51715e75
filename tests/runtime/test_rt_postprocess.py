"""Post-processing: each step on tiny arrays, the fixed order, chip rules, nodata."""

import numpy as np
import pytest

from oncloudn.runtime import postprocess as pp
from oncloudn.runtime.manifest import ChipRules, PostprocessSpec


def _square(size: int = 12, start: int = 3, stop: int = 9) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[start:stop, start:stop] = True
    return mask


def test_defaults_are_threshold_only() -> None:
    rng = np.random.default_rng(0)
    probability = rng.random((16, 16)).astype(np.float32)
    mask = pp.postprocess(probability, None, 0.4)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, (probability >= 0.4).astype(np.uint8))


def test_smoothing_spreads_a_single_peak() -> None:
    probability = np.zeros((9, 9), np.float32)
    probability[4, 4] = 1.0
    smoothed = pp.smooth(probability, 1.0)
    assert smoothed[4, 4] < 1.0 and smoothed[4, 5] > 0 and smoothed.sum() == pytest.approx(1.0)
    assert pp.smooth(probability, 0) is probability


def test_opening_removes_specks_keeps_blocks() -> None:
    mask = _square()
    mask[0, 0] = True
    opened = pp.opening(mask, 1)
    assert not opened[0, 0]
    assert opened[5, 5] and opened[3:9, 3:9].sum() >= 30


def test_closing_fills_a_one_pixel_gap() -> None:
    mask = _square()
    mask[3:9, 6] = False
    closed = pp.closing(mask, 1)
    assert closed[4:8, 6].all()
    assert not pp.closing(np.pad(mask[:, :6], ((0, 0), (0, 6))), 1)[4:8, 6].any()


def test_dilation_and_erosion_by_radius() -> None:
    mask = _square()
    assert pp.dilation(mask, 1).sum() == 36 + 4 * 6  # disk of radius 1: a plus sign
    assert pp.erosion(mask, 1).sum() == 16


def test_morphology_does_not_erode_at_the_chip_border() -> None:
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True  # cloud touching the left border
    np.testing.assert_array_equal(pp.closing(mask, 2), mask)
    np.testing.assert_array_equal(pp.erosion(mask, 1)[:, 0], mask[:, 0])


def test_remove_small_objects_uses_8_connectivity() -> None:
    mask = np.zeros((10, 10), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal pair: one 2-pixel object
    mask[5:8, 5:8] = True  # 9 pixels
    out = pp.remove_small_objects(mask, 3)
    assert not out[:2, :2].any() and out[5:8, 5:8].all()
    assert pp.remove_small_objects(mask, 2)[0, 0]


def test_fill_small_holes_not_border_regions() -> None:
    mask = np.ones((10, 10), bool)
    mask[4:6, 4:6] = False  # 4-pixel hole
    mask[0, 0:3] = False  # touches the border: not a hole
    out = pp.fill_small_holes(mask, 4)
    assert out[4:6, 4:6].all() and not out[0, 0:3].any()
    assert not pp.fill_small_holes(mask, 3)[4, 4]


def test_order_dilation_before_min_area() -> None:
    # A 2x2 blob: removed by min_area=10 alone, but it is dilated to 12 pixels first.
    probability = np.zeros((12, 12), np.float32)
    probability[5:7, 5:7] = 1.0
    only_area = pp.postprocess(probability, None, 0.5, PostprocessSpec(min_area=10))
    dilated = pp.postprocess(probability, None, 0.5, PostprocessSpec(dilation=1, min_area=10))
    assert only_area.sum() == 0
    assert dilated.sum() == 12


def test_order_opening_before_closing() -> None:
    # Two blocks joined by a 1-pixel bridge: opening cuts the bridge, closing (radius 1)
    # cannot restore it across the 1-pixel-wide cut.
    mask = np.zeros((9, 15), np.float32)
    mask[2:7, 1:6] = 1
    mask[2:7, 9:14] = 1
    mask[4, 6:9] = 1
    out = pp.postprocess(mask, None, 0.5, PostprocessSpec(opening=1, closing=1))
    assert not out[4, 7]
    assert out[4, 3] and out[4, 11]


def test_chip_rules_use_the_valid_fraction() -> None:
    probability = np.zeros((10, 10), np.float32)
    probability[:, :2] = 1.0  # 20 % of the chip
    nodata = np.zeros((10, 10), bool)
    nodata[:, 5:] = True  # half the chip has no data: 40 % of valid pixels are cloud
    rules = ChipRules(min_cloud_fraction=0.3)
    assert pp.postprocess(probability, None, 0.5, rules=rules).sum() == 0
    kept = pp.postprocess(probability, nodata, 0.5, rules=rules)
    assert kept.sum() == 20
    full = pp.postprocess(probability, nodata, 0.5, rules=ChipRules(full_cloud_fraction=0.4))
    assert full[:, :5].all() and not full[:, 5:].any()  # all cloud, then nodata -> 0


def test_nodata_pixels_are_zero_and_shapes_checked() -> None:
    probability = np.ones((4, 4), np.float32)
    nodata = np.zeros((4, 4), bool)
    nodata[0] = True
    mask = pp.postprocess(probability, nodata, 0.5, PostprocessSpec(dilation=1))
    assert mask[0].sum() == 0 and mask[1:].all()
    with pytest.raises(ValueError, match="nodata shape"):
        pp.postprocess(probability, nodata[:2], 0.5)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        pp.postprocess(probability[None], None, 0.5)


def test_full_pipeline_is_fast_on_a_chip() -> None:
    import time

    probability = np.random.default_rng(1).random((512, 512)).astype(np.float32)
    spec = PostprocessSpec(1.0, 2, 2, 1, 1, 50, 50)
    start = time.perf_counter()
    mask = pp.postprocess(probability, None, 0.5, spec, ChipRules(0.01, 0.99))
    assert time.perf_counter() - start < 2.0
    assert set(np.unique(mask)) <= {0, 1}

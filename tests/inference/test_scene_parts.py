"""The parts of scene prediction: windows, blend weights, row blending, strip post-processing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oncloudn.errors import ConfigError
from oncloudn.inference.scene_blend import RowBlender
from oncloudn.inference.scene_offset import find_product_metadata, read_product_offsets
from oncloudn.inference.scene_postprocess import postprocess_scene
from oncloudn.inference.scene_store import RowFile, RunState
from oncloudn.inference.scene_windows import blend_weights, window_grid
from oncloudn.runtime.manifest import PostprocessSpec
from oncloudn.runtime.postprocess import postprocess_pixels


def test_window_grid_covers_the_scene_and_checks_its_settings() -> None:
    grid = window_grid(1000, 300, 256, 32)
    assert grid.rows == (0, 224, 448, 672, 744) and grid.cols == (0, 44)
    assert grid.rows[-1] + grid.height == 1000 and grid.cols[-1] + grid.width == 300
    small = window_grid(100, 80, 256, 32)
    assert (small.rows, small.cols, small.height, small.width) == ((0,), (0,), 100, 80)
    with pytest.raises(ConfigError, match="overlap"):
        window_grid(1000, 1000, 256, 200)


@pytest.mark.parametrize("blend", ["gaussian", "linear"])
def test_blend_weights_vanish_at_inner_edges_and_cover_every_pixel(blend: str) -> None:
    inner = blend_weights(256, 256, 64, blend)
    assert inner[:16].max() == 0 and inner[-16:].max() == 0 and inner[128, 128] == 1
    border = blend_weights(256, 256, 64, blend, inner=(False, True, False, True))
    assert border[0, 0] == 1 and border[-1, 128] == 0  # scene border kept, inner edge dropped
    # Two windows overlapping by 64 px: every pixel of the pair gets some weight.
    total = np.zeros(448)
    for start in (0, 192):
        profile = blend_weights(1, 256, 64, blend, inner=(False, False, start > 0, start == 0))
        total[start : start + 256] += profile[0]
    assert total.min() > 0
    with pytest.raises(ConfigError, match="unknown blend"):
        blend_weights(8, 8, 2, "cubic")


def test_row_blender_averages_by_weight_and_marks_unweighted_rows_nan() -> None:
    blender = RowBlender(width=4, capacity=4)
    blender.add(0, 0, np.full((4, 4), 0.2, np.float32), np.ones((4, 4), np.float32))
    rows = blender.flush(2)  # the next row of windows starts at row 2
    np.testing.assert_allclose(rows, 0.2)
    weight = np.ones((4, 4), np.float32)
    weight[:, 3] = 0  # e.g. nodata: this window adds nothing there
    blender.add(2, 0, np.full((4, 4), 0.8, np.float32), 3 * weight)
    rows = blender.flush(4)  # rows 2-3: (0.2 * 1 + 0.8 * 3) / 4, column 3 only the first
    np.testing.assert_allclose(rows[:, :3], 0.65, rtol=1e-6)
    np.testing.assert_allclose(rows[:, 3], 0.2)
    rows = blender.flush(6)
    np.testing.assert_allclose(rows[:, :3], 0.8)
    assert np.isnan(rows[:, 3]).all()


@pytest.mark.parametrize("strip_rows", [7, 16, 64])
def test_strip_postprocessing_equals_the_whole_image(tmp_path: Path, strip_rows: int) -> None:
    rng = np.random.default_rng(strip_rows)
    probability = rng.random((64, 48)).astype(np.float32)
    probability = (probability + np.roll(probability, 1, 0) + np.roll(probability, 1, 1)) / 3
    nodata = np.zeros_like(probability, bool)
    nodata[:, :5] = True
    spec = PostprocessSpec(
        smoothing_sigma=0.7, opening=1, closing=1, dilation=1, min_area=12, max_hole_area=9
    )
    stored = RowFile(tmp_path / "p.f32", 64, 48, "f4")
    stored.write_rows(0, np.where(nodata, np.nan, probability))
    mask = RowFile(tmp_path / "m.u8", 64, 48, "u1")
    postprocess_scene(stored, mask, 0.5, spec, strip_rows=strip_rows)
    expected = postprocess_pixels(np.where(nodata, 0, probability), nodata, 0.5, spec)
    np.testing.assert_array_equal(mask.read_rows(0, 64) == 1, expected)


def test_components_span_strips_for_min_area_and_holes(tmp_path: Path) -> None:
    # A thin 1-px cloud snaking down through every strip (large as a whole, small per strip),
    # a ring whose hole crosses a strip boundary, and a speck.
    probability = np.zeros((40, 20), np.float32)
    probability[:, 2] = 1.0
    probability[20:30, 8:16] = 1.0
    probability[24:26, 11:13] = 0.0  # the hole: 4 px, across rows 24|25 with strips of 5
    probability[5, 18] = 1.0
    stored = RowFile(tmp_path / "p.f32", 40, 20, "f4")
    stored.write_rows(0, probability)
    mask = RowFile(tmp_path / "m.u8", 40, 20, "u1")
    spec = PostprocessSpec(min_area=10, max_hole_area=4)
    postprocess_scene(stored, mask, 0.5, spec, strip_rows=5)
    result = mask.read_rows(0, 40)
    assert result[:, 2].all() and result[24:26, 11:13].all() and result[5, 18] == 0
    expected = postprocess_pixels(probability, None, 0.5, spec)
    np.testing.assert_array_equal(result == 1, expected)


def test_run_state_resumes_only_a_matching_run(tmp_path: Path) -> None:
    out = tmp_path / "mask.tif"
    state = RunState(out, {"model": 1})
    state.mark_rows_done(3)
    assert RunState(out, {"model": 1}).rows_done == 3
    assert RunState(out, {"model": 2}).rows_done == 0  # another run: starts over
    state = RunState(out, {"model": 2})
    state.mark_rows_done(1)
    assert RunState(out, {"model": 2}, resume=False).rows_done == 0


def test_product_offsets_by_band_id(tmp_path: Path) -> None:
    safe = tmp_path / "S2B_MSIL1C.SAFE"
    (safe / "GRANULE" / "IMG_DATA").mkdir(parents=True)
    (safe / "MTD_MSIL1C.xml").write_text(
        '<r><RADIO_ADD_OFFSET band_id="1">-1000</RADIO_ADD_OFFSET>'
        '<RADIO_ADD_OFFSET band_id="7">-999</RADIO_ADD_OFFSET></r>'
    )
    metadata = find_product_metadata(safe / "GRANULE" / "IMG_DATA")
    assert metadata == safe / "MTD_MSIL1C.xml"
    assert read_product_offsets(metadata, ["B02", "B03", "B08"]) == [-1000.0, 0.0, -999.0]

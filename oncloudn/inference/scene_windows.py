"""Overlapping windows over a scene and the weights that blend them.

Windows of ``size`` start every ``size - overlap`` pixels; the last row and column of windows
lie flush with the scene's far edges (``oncloudn.models.tiling.tile_starts``), so every pixel
is covered and no window reads outside the scene (a side shorter than ``size`` gets one
window of that side). Rows of windows are predicted top to bottom: rows above the next row's
first pixel are then final and can be written (``scene_blend.py``).

Blend weights are separable and largest at a window's centre: ``gaussian`` (sigma = 1/8 of
the side, as nnU-Net's sliding window) or ``linear`` (a ramp over the overlap, flat inside).
They never reach 0 (a floor of 1e-3), so a pixel on the scene's edge, seen only by a window's
edge, still gets a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oncloudn.errors import ConfigError
from oncloudn.models.tiling import tile_starts

BLENDS = ("gaussian", "linear")
WEIGHT_FLOOR = 1e-3
GAUSSIAN_SIGMA = 1.0 / 8.0


@dataclass(frozen=True)
class WindowGrid:
    """The windows of one scene.

    Attributes:
        rows: Start row of each row of windows (increasing).
        cols: Start column of each column of windows.
        height: Window height (the scene's when shorter than the window size).
        width: Window width.
    """

    rows: tuple[int, ...]
    cols: tuple[int, ...]
    height: int
    width: int

    @property
    def count(self) -> int:
        """Number of windows."""
        return len(self.rows) * len(self.cols)


def window_grid(scene_height: int, scene_width: int, size: int, overlap: int) -> WindowGrid:
    """Windows of ``size`` overlapping by ``overlap`` over a ``scene_height x scene_width``.

    Raises:
        ConfigError: ``size`` below 32, or an overlap outside ``[0, size / 2]``.
    """
    if size < 32:
        raise ConfigError(f"window size must be >= 32 px, got {size}")
    if not 0 <= overlap <= size // 2:
        raise ConfigError(
            f"overlap must be in [0, {size // 2}] for windows of {size} px, got {overlap}"
        )
    height, width = min(size, scene_height), min(size, scene_width)
    rows = tile_starts(scene_height, height, max(1, size - overlap))
    cols = tile_starts(scene_width, width, max(1, size - overlap))
    return WindowGrid(tuple(rows), tuple(cols), height, width)


def _profile(length: int, overlap: int, blend: str) -> np.ndarray:
    position = np.arange(length, dtype=np.float64) + 0.5
    if blend == "gaussian":
        sigma = GAUSSIAN_SIGMA * length
        weights = np.exp(-0.5 * ((position - length / 2.0) / sigma) ** 2)
    else:
        ramp = max(1, overlap)
        weights = np.minimum(1.0, np.minimum(position, length - position) / ramp)
    return np.maximum(weights / weights.max(), WEIGHT_FLOOR)


def blend_weights(height: int, width: int, overlap: int, blend: str = "gaussian") -> np.ndarray:
    """Weights ``[height, width]`` (float32, max 1, min 1e-3) of one window.

    Raises:
        ConfigError: An unknown blend.
    """
    if blend not in BLENDS:
        raise ConfigError(f"unknown blend {blend!r}; choose one of: {', '.join(BLENDS)}")
    weights = np.outer(_profile(height, overlap, blend), _profile(width, overlap, blend))
    return weights.astype(np.float32)

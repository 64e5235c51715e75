"""Overlapping windows over a scene and the weights that blend them.

Windows of ``size`` start every ``size - overlap`` pixels; the last row and column of windows
lie flush with the scene's far edges (``oncloudn.models.tiling.tile_starts``), so every pixel
is covered and no window reads outside the scene (a side shorter than ``size`` gets one
window of that side). Rows of windows are predicted top to bottom: rows above the next row's
first pixel are then final and can be written (``scene_blend.py``).

Blend weights are separable and largest at a window's centre: ``gaussian`` (sigma = 1/8 of
the side, as nnU-Net's sliding window) or ``linear`` (a ramp over the overlap, flat inside).
Inside the scene they are 0 in a window's outer ``overlap / 4`` pixels, where the network's
zero padding changes its output (the neighbour, for which those pixels lie well inside,
predicts them alone), and at least 1e-3 elsewhere. A window side on the scene's border is
not tapered at all: no other window predicts there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oncloudn.errors import ConfigError
from oncloudn.models.tiling import tile_starts

BLENDS = ("gaussian", "linear")
WEIGHT_FLOOR = 1e-3
GAUSSIAN_SIGMA = 1.0 / 8.0
MARGIN_DIVISOR = 4


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


def _profile(length: int, overlap: int, blend: str, inner: tuple[bool, bool]) -> np.ndarray:
    """Weights along one side; ``inner`` says whether its start and end are window edges
    inside the scene (else scene borders: no taper, nothing else predicts there)."""
    position = np.arange(length, dtype=np.float64) + 0.5
    if blend == "gaussian":
        sigma = GAUSSIAN_SIGMA * length
        weights = np.exp(-0.5 * ((position - length / 2.0) / sigma) ** 2)
    else:
        ramp = max(1, overlap)
        weights = np.minimum(1.0, np.minimum(position, length - position) / ramp)
    weights = np.maximum(weights / weights.max(), WEIGHT_FLOOR)
    half = length // 2
    margin = overlap // MARGIN_DIVISOR
    if not inner[0]:
        weights[:half] = 1.0
    elif margin:
        weights[:margin] = 0.0
    if not inner[1]:
        weights[half:] = 1.0
    elif margin:
        weights[length - margin :] = 0.0
    return weights


def blend_weights(
    height: int,
    width: int,
    overlap: int,
    blend: str = "gaussian",
    inner: tuple[bool, bool, bool, bool] = (True, True, True, True),
) -> np.ndarray:
    """Weights ``[height, width]`` (float32, max 1) of one window.

    Args:
        height: Window height.
        width: Window width.
        overlap: Pixels shared with neighbouring windows.
        blend: ``gaussian`` or ``linear``.
        inner: Whether the window's top, bottom, left and right edges lie inside the scene
            (a neighbour overlaps there); a side on the scene's border keeps full weight.

    Raises:
        ConfigError: An unknown blend.
    """
    if blend not in BLENDS:
        raise ConfigError(f"unknown blend {blend!r}; choose one of: {', '.join(BLENDS)}")
    rows = _profile(height, overlap, blend, inner[:2])
    cols = _profile(width, overlap, blend, inner[2:])
    return np.outer(rows, cols).astype(np.float32)

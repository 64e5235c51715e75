"""Weighted blending of overlapping windows in a band of rows that moves down the scene.

Windows arrive a row of windows at a time, top to bottom. Their probabilities, times their
blend weights, and the weights themselves are summed in a buffer one window tall and as wide
as the scene. Once a row of windows is done, every scene row above the next row of windows
is final: :meth:`RowBlender.flush` returns those rows (sum / weight) and shifts the buffer up.
Memory is two float32 buffers of ``window height x scene width``, whatever the scene height.

Weights are zero at nodata pixels, so a nodata pixel never pulls its window's prediction
into a neighbour's blend, and a pixel with no weight at all (nodata, or inside skipped
all-nodata windows) comes out as ``NaN``.
"""

from __future__ import annotations

import numpy as np


class RowBlender:
    """Sums of weighted probabilities for scene rows ``[base, base + capacity)``.

    Args:
        width: Scene width.
        capacity: Rows held (the window height).
        base: First scene row held.
    """

    def __init__(self, width: int, capacity: int, base: int = 0):
        self.base = int(base)
        self.weighted = np.zeros((capacity, width), np.float32)
        self.weight = np.zeros((capacity, width), np.float32)

    def add(self, row: int, col: int, probability: np.ndarray, weight: np.ndarray) -> None:
        """Add one window's ``probability`` ``[h, w]`` at ``(row, col)`` with ``weight``.

        Rows above ``base`` (already flushed) are ignored.

        Raises:
            ValueError: The window reaches below the buffer.
        """
        skip = max(0, self.base - row)
        top = row + skip - self.base
        height, width = probability.shape
        if top + height - skip > len(self.weight):
            raise ValueError(
                f"window at row {row} (+{height}) reaches past the buffer "
                f"[{self.base}, {self.base + len(self.weight)})"
            )
        probability, weight = probability[skip:], weight[skip:]
        rows = slice(top, top + height - skip)
        cols = slice(col, col + width)
        self.weighted[rows, cols] += probability * weight
        self.weight[rows, cols] += weight

    def flush(self, until: int) -> np.ndarray:
        """The blended rows ``[base, until)`` (``NaN`` where nothing weighed in); moves on.

        Raises:
            ValueError: ``until`` outside the buffer.
        """
        count = until - self.base
        if not 0 <= count <= len(self.weight):
            raise ValueError(f"cannot flush to row {until} from row {self.base}")
        weight = self.weight[:count]
        with np.errstate(invalid="ignore", divide="ignore"):
            rows = np.where(weight > 0, self.weighted[:count] / weight, np.float32(np.nan))
        for buffer in (self.weighted, self.weight):
            buffer[: len(buffer) - count] = buffer[count:].copy()
            buffer[len(buffer) - count :] = 0.0
        self.base = until
        return rows.astype(np.float32, copy=False)

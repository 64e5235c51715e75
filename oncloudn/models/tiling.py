"""Tiled prediction of arrays of any size with a fixed-size model (numpy, library side).

A model that only takes ``size x size`` inputs (e.g. an exported ONNX network with a fixed
spatial shape, or one trained at 256) predicts an ``H x W`` array through tiles:

- tiles start at ``0, stride, 2 * stride, ...`` and a last tile lies flush with the far edge,
  so every pixel is covered whatever ``H`` and ``W`` are (``stride = size``: non-overlapping
  tiles, e.g. four 256 tiles of a 512 chip);
- a side shorter than ``size`` is first padded at the bottom/right by reflection (edge
  replication for a 1-pixel side), and the output is cropped back;
- overlapping tiles are blended by the uniform mean of their outputs.

Zero padding is never used: zeros read as nodata.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TileFn = Callable[[np.ndarray], np.ndarray]
"""Maps a batch of inputs ``[B, C, h, w]`` to outputs ``[B, K, h, w]`` (same ``h, w``)."""


def tile_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of tiles of ``size`` covering ``length`` (>= ``size``) with ``stride``.

    Raises:
        ValueError: ``size`` or ``stride`` below 1, or ``length`` shorter than ``size``.
    """
    if size < 1 or stride < 1:
        raise ValueError(f"tile size and stride must be >= 1, got {size} and {stride}")
    if length < size:
        raise ValueError(f"a side of {length} px is shorter than the tile size {size}; pad it")
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def pad_to_size(x: np.ndarray, size: int) -> np.ndarray:
    """Pad ``[N, C, H, W]`` at the bottom and right so that ``H, W >= size``.

    Reflection where a side has more than one pixel (repeated as often as needed), else edge
    replication.
    """
    pads = [max(0, size - side) for side in x.shape[-2:]]
    if not any(pads):
        return x
    width = [(0, 0), (0, 0), (0, pads[0]), (0, pads[1])]
    mode = "reflect" if min(x.shape[-2:]) > 1 else "edge"
    return np.pad(x, width, mode=mode)


def _run_batches(fn: TileFn, x: np.ndarray, batch_size: int) -> np.ndarray:
    outputs = [
        fn(np.ascontiguousarray(x[i : i + batch_size])) for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outputs)


def predict_tiled(
    fn: TileFn,
    x: np.ndarray,
    size: int | None,
    stride: int | None = None,
    batch_size: int = 4,
) -> np.ndarray:
    """Outputs ``[N, K, H, W]`` of ``fn`` over ``x`` ``[N, C, H, W]`` of any ``H x W``.

    Args:
        fn: The model on a batch of tiles (see :data:`TileFn`).
        x: The (normalized) input.
        size: Tile side; ``None`` runs ``fn`` on whole inputs.
        stride: Step between tiles (default ``size``: no overlap); overlaps are averaged.
        batch_size: Tiles (or whole inputs) per call of ``fn``.

    Raises:
        ValueError: A tile size, stride or batch size below 1, or a stride above the size
            (pixels would be skipped).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if size is None:
        return _run_batches(fn, x, batch_size)
    stride = size if stride is None else stride
    if stride > size:
        raise ValueError(
            f"tile stride {stride} exceeds the tile size {size}: pixels would be skipped"
        )
    height, width = x.shape[-2:]
    padded = pad_to_size(x, size)
    ys = tile_starts(padded.shape[-2], size, stride)
    xs = tile_starts(padded.shape[-1], size, stride)
    positions = [(y, x0) for y in ys for x0 in xs]
    tiles = np.stack([padded[:, :, y : y + size, x0 : x0 + size] for y, x0 in positions], axis=1)
    n, n_tiles = tiles.shape[:2]
    out = _run_batches(fn, tiles.reshape(n * n_tiles, *tiles.shape[2:]), batch_size)
    out = out.reshape(n, n_tiles, *out.shape[1:])
    total = np.zeros((n, out.shape[2], *padded.shape[-2:]), np.float32)
    count = np.zeros(padded.shape[-2:], np.float32)
    for index, (y, x0) in enumerate(positions):
        total[:, :, y : y + size, x0 : x0 + size] += out[:, index]
        count[y : y + size, x0 : x0 + size] += 1.0
    return (total / count)[:, :, :height, :width]

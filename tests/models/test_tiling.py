"""Tiled prediction: tiles cover any H x W, short sides are padded, overlaps are averaged."""

from __future__ import annotations

import numpy as np
import pytest

from oncloudn.models.tiling import pad_to_size, predict_tiled, tile_starts


def test_tile_starts_cover_the_side() -> None:
    assert tile_starts(512, 256, 256) == [0, 256]
    assert tile_starts(512, 256, 128) == [0, 128, 256]
    assert tile_starts(300, 256, 256) == [0, 44]  # the last tile lies flush with the edge
    assert tile_starts(256, 256, 100) == [0]
    with pytest.raises(ValueError, match="shorter than the tile size"):
        tile_starts(100, 256, 256)


@pytest.mark.parametrize(
    ("height", "width", "size", "stride"),
    [(64, 64, 32, 32), (37, 50, 16, 16), (37, 50, 16, 5), (10, 7, 16, None), (1, 40, 8, 8)],
)
def test_identity_model_is_reproduced_exactly(height, width, size, stride) -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, height, width)).astype(np.float32)
    seen = []

    def fn(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.shape)
        return batch * 2.0

    out = predict_tiled(fn, x, size, stride, batch_size=3)
    assert out.shape == x.shape
    np.testing.assert_allclose(out, x * 2.0, rtol=1e-6)
    assert all(shape[1:] == (3, size, size) and shape[0] <= 3 for shape in seen)


def test_overlaps_are_averaged() -> None:
    x = np.zeros((1, 1, 4, 6), np.float32)
    calls = iter(range(100))

    def fn(batch: np.ndarray) -> np.ndarray:  # every tile answers its own call number
        return np.stack([np.full(b.shape, next(calls), np.float32) for b in batch])

    out = predict_tiled(fn, x, size=4, stride=2, batch_size=1)  # tiles at x0 = 0 and 2
    np.testing.assert_array_equal(out[0, 0, 0], [0, 0, 0.5, 0.5, 1, 1])


def test_padding_is_reflection_not_zeros() -> None:
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    padded = pad_to_size(x, 4)
    assert padded.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(padded[0, 0, 0], [0, 1, 2, 1])
    assert pad_to_size(np.ones((1, 1, 1, 1), np.float32), 3).min() == 1.0
    with pytest.raises(ValueError, match="exceeds the tile size"):
        predict_tiled(lambda b: b, x, size=2, stride=3)

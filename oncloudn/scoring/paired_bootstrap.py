"""Paired bootstrap of the difference between two pooled Jaccard scores on the same chips.

Two settings (or models) scored on the same chips are compared by resampling chips once per
draw and pooling both scores over the same draw, so the chips' shared difficulty cancels out:
the interval of the difference is much narrower than the two scores' own intervals suggest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oncloudn.errors import DataError

_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class PairedDifference:
    """``b - a`` of pooled Jaccard scores, with its percentile bootstrap interval.

    Attributes:
        difference: Pooled Jaccard of ``b`` minus that of ``a`` on all chips.
        low: Lower bound of the interval (``nan`` without resamples).
        high: Upper bound.
        share_better: Share of resamples in which ``b`` scored higher than ``a``.
    """

    difference: float
    low: float
    high: float
    share_better: float


def _pooled(inter: np.ndarray, union: np.ndarray) -> float:
    total = int(union.sum())
    return float(inter.sum()) / total if total else float("nan")


def paired_difference(
    counts_a: np.ndarray,
    counts_b: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedDifference:
    """Pooled Jaccard of ``b`` minus ``a`` with a paired, chip-resampling bootstrap interval.

    Args:
        counts_a: ``[n_chips, 2]`` intersections and unions of ``a``.
        counts_b: The same chips' counts under ``b``.
        n_boot: Resamples (0: no interval).
        seed: Random seed.
        alpha: 1 - confidence level.

    Raises:
        DataError: Shapes differ, no chips, or ``alpha`` outside (0, 1).
    """
    a = np.asarray(counts_a, dtype=np.int64).reshape(-1, 2)
    b = np.asarray(counts_b, dtype=np.int64).reshape(-1, 2)
    if a.shape != b.shape or a.size == 0:
        raise DataError(
            f"paired bootstrap needs the same chips on both sides, got {a.shape} and {b.shape}"
        )
    if not 0.0 < alpha < 1.0:
        raise DataError(f"alpha must be in (0, 1), got {alpha}")
    difference = _pooled(b[:, 0], b[:, 1]) - _pooled(a[:, 0], a[:, 1])
    if n_boot <= 0:
        return PairedDifference(difference, float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    n = a.shape[0]
    rows = max(1, _CHUNK_ELEMENTS // n)
    draws = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        with np.errstate(invalid="ignore", divide="ignore"):
            ja = a[idx, 0].sum(1) / a[idx, 1].sum(1)
            jb = b[idx, 0].sum(1) / b[idx, 1].sum(1)
        draws[start:stop] = jb - ja
    if np.isnan(draws).all():
        return PairedDifference(difference, float("nan"), float("nan"), float("nan"))
    low, high = np.nanpercentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    share = float(np.nanmean(draws > 0))
    return PairedDifference(difference, float(low), float(high), share)

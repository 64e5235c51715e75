"""The competition metric: Jaccard index over all pixels of all chips pooled.

The score is ``sum(intersection) / sum(union)`` over every chip, not a mean of per-chip
scores, so a chip weighs as much as its union of cloud pixels. As in the competition's own
scorer, any nonzero pixel counts as cloud (in the prediction and in the label) and there is no
nodata handling; ``ignore_value`` (off by default) optionally drops label pixels equal to it
(e.g. 255) from both intersection and union.

Empty union convention: an empty union (no cloud predicted nor labelled) is 0/0, which this
module returns as ``nan`` (per chip and pooled). Pooled over many chips this practically never
happens; the competition's scorer refuses such a set outright.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, fields

import numpy as np

from oncloudn.errors import DataError

logger = logging.getLogger(__name__)

_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000
"""Largest index matrix (resamples x chips) drawn at once, to bound memory."""


@dataclass(frozen=True)
class ChipCounts:
    """Pixel counts of one chip (or of several chips summed with ``+``).

    All counts are over *valid* pixels: every pixel, or those whose label differs from
    ``ignore_value`` when one is given.

    Attributes:
        intersection: Pixels that are cloud in both prediction and label (= ``tp``).
        union: Pixels that are cloud in either (= ``tp + fp + fn``).
        tp: True positives.
        fp: False positives (predicted cloud, labelled clear).
        fn: False negatives (labelled cloud, predicted clear).
        n_pred: Pixels predicted cloud.
        n_label: Pixels labelled cloud.
        n_valid: Pixels taken into account.
    """

    intersection: int = 0
    union: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    n_pred: int = 0
    n_label: int = 0
    n_valid: int = 0

    def __add__(self, other: ChipCounts) -> ChipCounts:
        if not isinstance(other, ChipCounts):
            return NotImplemented
        return ChipCounts(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    @property
    def jaccard(self) -> float:
        """Intersection over union; ``nan`` when the union is empty."""
        return _ratio(self.intersection, self.union)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else float("nan")


def chip_counts(pred: np.ndarray, label: np.ndarray, ignore_value: int | None = None) -> ChipCounts:
    """Count intersection, union and confusion pixels of a prediction against its label.

    Args:
        pred: Predicted mask (any shape; nonzero = cloud).
        label: Label of the same shape (nonzero = cloud, as in the competition's scorer).
        ignore_value: Label value whose pixels are left out of every count (e.g. 255), or
            ``None`` to count every pixel.

    Returns:
        The chip's counts.

    Raises:
        DataError: The shapes differ.
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    if pred.shape != label.shape:
        raise DataError(
            f"prediction shape {pred.shape} differs from label shape {label.shape}; "
            "predictions must have the label's size (512 x 512 for On Cloud N chips)"
        )
    pred_cloud = pred != 0
    label_cloud = label != 0
    if ignore_value is None:
        n_valid = label.size
    else:
        valid = label != ignore_value
        n_valid = int(np.count_nonzero(valid))
        pred_cloud &= valid
        label_cloud &= valid
    tp = int(np.count_nonzero(pred_cloud & label_cloud))
    n_pred = int(np.count_nonzero(pred_cloud))
    n_label = int(np.count_nonzero(label_cloud))
    fp = n_pred - tp
    fn = n_label - tp
    return ChipCounts(
        intersection=tp,
        union=tp + fp + fn,
        tp=tp,
        fp=fp,
        fn=fn,
        n_pred=n_pred,
        n_label=n_label,
        n_valid=n_valid,
    )


def total_counts(counts: ChipCounts | Iterable[ChipCounts]) -> ChipCounts:
    """Sum the counts of several chips (a single ``ChipCounts`` is returned as is)."""
    if isinstance(counts, ChipCounts):
        return counts
    return sum(counts, ChipCounts())


def pooled_jaccard(counts: ChipCounts | Iterable[ChipCounts]) -> float:
    """The competition score: summed intersections over summed unions.

    Args:
        counts: One chip's counts or the counts of every chip.

    Returns:
        The pooled Jaccard index, ``nan`` when the pooled union is empty (0/0).
    """
    total = total_counts(counts)
    if total.union == 0:
        logger.warning("empty union (no cloud predicted nor labelled): Jaccard is 0/0 = nan")
    return total.jaccard


def precision(counts: ChipCounts | Iterable[ChipCounts]) -> float:
    """Pooled precision ``tp / (tp + fp)``; ``nan`` when nothing is predicted cloud."""
    total = total_counts(counts)
    return _ratio(total.tp, total.tp + total.fp)


def recall(counts: ChipCounts | Iterable[ChipCounts]) -> float:
    """Pooled recall ``tp / (tp + fn)``; ``nan`` when nothing is labelled cloud."""
    total = total_counts(counts)
    return _ratio(total.tp, total.tp + total.fn)


def bootstrap_ci(
    intersections: np.ndarray | Iterable[int],
    unions: np.ndarray | Iterable[int],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the pooled Jaccard, resampling chips.

    Each resample draws as many chips as there are, with replacement, and pools them (sum of
    intersections over sum of unions), exactly like the score itself. Resampling is vectorised
    with a matrix of integer chip indices (drawn in chunks to bound memory).

    Args:
        intersections: Per-chip intersections.
        unions: Per-chip unions (same length).
        n_boot: Number of resamples; 0 disables the interval (returns ``(nan, nan)``).
        seed: Seed of the random generator (same seed, same interval).
        alpha: 1 - confidence level (0.05 gives a 95 % interval).

    Returns:
        ``(low, high)``; ``nan`` when undefined (no resamples, or every resample has an empty
        union).

    Raises:
        DataError: No chips, lengths differ, negative counts or ``alpha`` not in (0, 1).
    """
    inter = np.asarray(intersections, dtype=np.int64).ravel()
    union = np.asarray(unions, dtype=np.int64).ravel()
    if inter.shape != union.shape:
        raise DataError(f"{inter.size} intersections but {union.size} unions; pass one per chip")
    if inter.size == 0:
        raise DataError("no chips to bootstrap; score at least one chip")
    if (inter < 0).any() or (union < inter).any():
        raise DataError("counts must satisfy 0 <= intersection <= union for every chip")
    if not 0.0 < alpha < 1.0:
        raise DataError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 0:
        raise DataError(f"n_boot must be >= 0 (0 disables the interval), got {n_boot}")
    if n_boot == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // inter.size)
    scores = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows_per_chunk):
        stop = min(n_boot, start + rows_per_chunk)
        indices = rng.integers(0, inter.size, size=(stop - start, inter.size))
        sum_inter = inter[indices].sum(axis=1)
        sum_union = union[indices].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores[start:stop] = np.where(sum_union > 0, sum_inter / sum_union, np.nan)
    if np.isnan(scores).all():
        return float("nan"), float("nan")
    low, high = np.nanpercentile(scores, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)

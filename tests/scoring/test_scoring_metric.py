"""The competition metric: hand-computed cases, a brute-force reference, bootstrap."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from oncloudn.errors import DataError
from oncloudn.scoring.metric import (
    ChipCounts,
    bootstrap_ci,
    chip_counts,
    pooled_jaccard,
    precision,
    recall,
)


def brute_force(preds, labels, ignore_value=None):
    """Pixel-by-pixel Python loops: (intersection, union, tp, fp, fn) pooled."""
    inter = union = fp = fn = 0
    for pred, label in zip(preds, labels, strict=True):
        for row in range(label.shape[0]):
            for col in range(label.shape[1]):
                truth = int(label[row, col])
                if ignore_value is not None and truth == ignore_value:
                    continue
                p, t = pred[row, col] != 0, truth != 0
                inter += p and t
                union += p or t
                fp += p and not t
                fn += t and not p
    return inter, union, fp, fn


def test_hand_computed_single_chip():
    pred = np.array([[1, 1, 0], [0, 1, 0]], np.uint8)
    label = np.array([[1, 0, 0], [1, 1, 0]], np.uint8)
    counts = chip_counts(pred, label)
    # cloud in both: (0,0), (1,1); either: (0,0), (0,1), (1,0), (1,1)
    assert counts == ChipCounts(
        intersection=2, union=4, tp=2, fp=1, fn=1, n_pred=3, n_label=3, n_valid=6
    )
    assert Fraction(counts.intersection, counts.union) == Fraction(1, 2)
    assert pooled_jaccard(counts) == 0.5
    assert precision(counts) == pytest.approx(2 / 3)
    assert recall(counts) == pytest.approx(2 / 3)


def test_pooled_differs_from_mean_of_chip_scores():
    # chip A: a tiny cloud missed entirely (J = 0/1); chip B: a big cloud found (J = 99/100)
    label_a = np.zeros((10, 10), np.uint8)
    label_a[0, 0] = 1
    pred_a = np.zeros_like(label_a)
    label_b = np.zeros((10, 10), np.uint8)
    label_b.flat[:100] = 1
    pred_b = label_b.copy()
    pred_b[9, 9] = 0
    counts = [chip_counts(pred_a, label_a), chip_counts(pred_b, label_b)]
    pooled = pooled_jaccard(counts)
    mean = np.mean([c.jaccard for c in counts])
    assert pooled == pytest.approx(99 / 101)
    assert mean == pytest.approx((0 + 99 / 100) / 2)
    assert abs(pooled - mean) > 0.4


def test_nonzero_label_values_are_cloud_by_default():
    label = np.array([[0, 1, 255, 7]], np.uint8)
    pred = np.array([[0, 1, 1, 0]], np.uint8)
    counts = chip_counts(pred, label)
    assert (counts.intersection, counts.union, counts.fn) == (2, 3, 1)


def test_ignore_value_drops_pixels_from_intersection_and_union():
    label = np.array([[0, 1, 255, 255], [1, 0, 0, 255]], np.uint8)
    pred = np.array([[1, 1, 1, 0], [1, 0, 0, 1]], np.uint8)
    counts = chip_counts(pred, label, ignore_value=255)
    # valid pixels: (0,0) fp, (0,1) tp, (1,0) tp, (1,1), (1,2) tn
    assert counts == ChipCounts(
        intersection=2, union=3, tp=2, fp=1, fn=0, n_pred=3, n_label=2, n_valid=5
    )
    assert chip_counts(pred, label).union == 6  # without it, 255 is cloud


@pytest.mark.parametrize("ignore_value", [None, 255])
def test_matches_brute_force_on_random_chips(ignore_value):
    rng = np.random.default_rng(7)
    preds, labels = [], []
    for _ in range(5):
        shape = tuple(rng.integers(3, 12, 2))
        preds.append((rng.random(shape) < rng.random()).astype(np.uint8))
        label = rng.choice(np.array([0, 1, 2, 255], np.uint8), size=shape, p=[0.5, 0.3, 0.1, 0.1])
        labels.append(label)
    counts = [chip_counts(p, t, ignore_value) for p, t in zip(preds, labels, strict=True)]
    inter, union, fp, fn = brute_force(preds, labels, ignore_value)
    total = sum(counts, ChipCounts())
    assert (total.intersection, total.union, total.fp, total.fn) == (inter, union, fp, fn)
    assert pooled_jaccard(counts) == pytest.approx(inter / union)


def test_empty_union_is_nan():
    zeros = np.zeros((4, 4), np.uint8)
    assert math.isnan(pooled_jaccard(chip_counts(zeros, zeros)))
    assert math.isnan(chip_counts(zeros, zeros).jaccard)


def test_shape_mismatch_is_a_data_error():
    with pytest.raises(DataError, match="shape"):
        chip_counts(np.zeros((4, 4)), np.zeros((4, 5)))


def _random_counts(n_chips, seed):
    rng = np.random.default_rng(seed)
    unions = rng.integers(100, 10_000, n_chips)
    intersections = (unions * rng.uniform(0.5, 1.0, n_chips)).astype(np.int64)
    return intersections, unions


def test_bootstrap_contains_estimate_and_is_deterministic():
    inter, union = _random_counts(50, 1)
    estimate = inter.sum() / union.sum()
    low, high = bootstrap_ci(inter, union, n_boot=500, seed=3)
    assert low < estimate < high
    assert (low, high) == bootstrap_ci(inter, union, n_boot=500, seed=3)
    assert (low, high) != bootstrap_ci(inter, union, n_boot=500, seed=4)


def test_bootstrap_narrows_with_more_chips():
    few = bootstrap_ci(*_random_counts(20, 2), n_boot=500, seed=0)
    many = bootstrap_ci(*_random_counts(2000, 2), n_boot=500, seed=0)
    assert many[1] - many[0] < (few[1] - few[0]) / 3


def test_bootstrap_chunking_matches_unchunked(monkeypatch):
    from oncloudn.scoring import metric

    inter, union = _random_counts(30, 5)
    whole = bootstrap_ci(inter, union, n_boot=200, seed=9)
    monkeypatch.setattr(metric, "_BOOTSTRAP_CHUNK_ELEMENTS", 30 * 7)
    assert bootstrap_ci(inter, union, n_boot=200, seed=9) == whole


def test_bootstrap_disabled_and_bad_input():
    inter, union = _random_counts(5, 0)
    assert all(math.isnan(v) for v in bootstrap_ci(inter, union, n_boot=0))
    with pytest.raises(DataError):
        bootstrap_ci([], [])
    with pytest.raises(DataError):
        bootstrap_ci([1, 2], [1])
    with pytest.raises(DataError):
        bootstrap_ci([3], [2])

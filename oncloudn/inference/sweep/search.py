"""Choosing a setting on tuning chips: coordinate ascent over the sweep's parameters.

Starting from a base setting, each parameter in :data:`~.settings.PARAMETERS` order is set to
the value of its list that scores best (pooled Jaccard over the tuning chips) with the others
held; a change is kept only if it beats the current score by more than ``min_gain`` (ties keep
the current value, so a parameter that does nothing stays at its default). Rounds repeat until
nothing changes or ``rounds`` is reached. Only the chips passed in are ever scored.

:func:`parameter_curves` scores each parameter's values around one setting (the others held):
the "Jaccard against each parameter" figures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .settings import PARAMETERS, Setting
from .store import SweepStore

logger = logging.getLogger(__name__)


def pooled(counts: np.ndarray) -> float:
    """Pooled Jaccard of ``[..., n_chips, 2]`` counts over the chip axis (``nan`` if empty)."""
    counts = np.asarray(counts)
    union = counts[..., 1].sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, counts[..., 0].sum(-1) / np.maximum(union, 1), np.nan)


@dataclass
class TuneResult:
    """The chosen setting and how it was reached.

    Attributes:
        best: The chosen setting.
        jaccard: Its pooled Jaccard on the tuning chips.
        base_jaccard: The base setting's.
        trace: One row per parameter looked at: round, parameter, value kept, Jaccard.
        chip_ids: The tuning chips.
    """

    best: Setting
    jaccard: float
    base_jaccard: float
    trace: list[dict[str, Any]] = field(default_factory=list)
    chip_ids: tuple[str, ...] = ()


def tune_setting(
    store: SweepStore,
    source: str,
    chip_ids: Sequence[str],
    space: Mapping[str, Sequence[Any]],
    base: Setting,
    rounds: int = 2,
    min_gain: float = 0.0,
    progress: bool = False,
) -> TuneResult:
    """Coordinate ascent from ``base`` on ``chip_ids`` (see the module docstring)."""
    chip_ids = list(chip_ids)
    current = base
    score = float(pooled(store.counts(source, chip_ids, [base]))[0])
    result = TuneResult(best=base, jaccard=score, base_jaccard=score, chip_ids=tuple(chip_ids))
    for round_index in range(max(1, rounds)):
        changed = False
        for name in PARAMETERS:
            values = list(space.get(name, ()))
            if not values:
                continue
            candidates = [current.with_value(name, value) for value in values]
            scores = pooled(store.counts(source, chip_ids, candidates, progress))
            best = int(np.nanargmax(scores)) if not np.isnan(scores).all() else 0
            if scores[best] > score + min_gain and candidates[best] != current:
                current, score, changed = candidates[best], float(scores[best]), True
            result.trace.append(
                {
                    "round": round_index + 1,
                    "parameter": name,
                    "value": getattr(current, name),
                    "jaccard": score,
                }
            )
        if not changed:
            break
    result.best, result.jaccard = current, score
    logger.info(
        "tuned %s on %d chips: %s (J %.4f)", source, len(chip_ids), current.describe(base), score
    )
    return result


def parameter_curves(
    store: SweepStore,
    source: str,
    chip_ids: Sequence[str],
    space: Mapping[str, Sequence[Any]],
    center: Setting,
) -> list[dict[str, Any]]:
    """Pooled Jaccard of each parameter's values around ``center`` (the others held).

    Returns:
        Rows ``{"parameter", "value", "jaccard", "chosen"}`` (``chosen``: the value equals
        ``center``'s).
    """
    rows = []
    for name in PARAMETERS:
        values = list(space.get(name, ()))
        if getattr(center, name) not in values:
            values.append(getattr(center, name))
        candidates = [center.with_value(name, value) for value in values]
        scores = pooled(store.counts(source, list(chip_ids), candidates))
        for value, score in zip(values, scores, strict=True):
            rows.append(
                {
                    "parameter": name,
                    "value": value,
                    "jaccard": float(score),
                    "chosen": value == getattr(center, name),
                }
            )
    return rows

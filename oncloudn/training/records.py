"""Typed records of training: the best epoch, a fold's progress, fold and run results."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class BestEpoch:
    """The best validation so far, and how many validations since it.

    Attributes:
        score: Best pooled validation Jaccard (``None`` before the first validation).
        epoch: Epoch (1-based) of the best score (0 before it).
        intersection: Pooled intersection of that validation.
        union: Pooled union of that validation.
        stale: Validations since the best one (for early stopping).
    """

    score: float | None = None
    epoch: int = 0
    intersection: float = 0.0
    union: float = 0.0
    stale: int = 0

    def beaten_by(self, score: float) -> bool:
        """Whether ``score`` beats the best (the first score always does; ``nan`` never does)."""
        if self.score is None:
            return True
        if math.isnan(score):
            return False
        return math.isnan(self.score) or score > self.score

    def record(self, epoch: int, intersection: float, union: float) -> bool:
        """Record a validation; returns whether it is the new best."""
        score = intersection / union if union else float("nan")
        if not self.beaten_by(score):
            self.stale += 1
            return False
        self.score, self.epoch, self.stale = score, epoch, 0
        self.intersection, self.union = intersection, union
        return True

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (how checkpoints store it, so they unpickle without this class)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | BestEpoch) -> BestEpoch:
        """The record of :meth:`to_dict` (older checkpoints' dicts have the same keys)."""
        if isinstance(data, BestEpoch):
            return dataclasses.replace(data)
        score = data.get("score")
        return cls(
            score=float(score) if score is not None else None,
            epoch=int(data.get("epoch", 0)),
            intersection=float(data.get("intersection", 0.0)),
            union=float(data.get("union", 0.0)),
            stale=int(data.get("stale", 0)),
        )


@dataclass
class Progress:
    """Where a fold's training stands (what ``last.pt`` carries besides the states).

    Attributes:
        epoch: Completed epochs.
        best: The best validation so far.
        history: Per-epoch records (epoch, loss, lr, val_jaccard when validated, seconds).
        stopped_early: Whether early stopping ended the training.
    """

    epoch: int = 0
    best: BestEpoch = field(default_factory=BestEpoch)
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


@dataclass
class FoldResult:
    """What training one fold produced.

    Attributes:
        fold: The held-out fold.
        model_dir: The fold's model folder (best epoch's weights).
        best_score: Best validation pooled Jaccard.
        best_epoch: Epoch (1-based) of the best score.
        epochs_run: Completed epochs.
        oof_path: The fold's OOF file.
        intersection: Pooled intersection of the best model on the validation chips.
        union: Pooled union of the best model on the validation chips.
        history: Per-epoch records (loss, val_jaccard, lr, seconds).
    """

    fold: int
    model_dir: Path
    best_score: float
    best_epoch: int
    epochs_run: int
    oof_path: Path
    intersection: float = 0.0
    union: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        out_dir: The run folder.
        folds_path: The folds file used.
        folds: One result per trained fold.
    """

    out_dir: Path
    folds_path: Path
    folds: list[FoldResult]

    @property
    def oof_jaccard(self) -> float:
        """Pooled Jaccard over every trained fold's validation chips (``nan`` if empty)."""
        union = sum(result.union for result in self.folds)
        return sum(result.intersection for result in self.folds) / union if union else float("nan")

"""Value ranges of the config keys, checked when a config loads.

A wrong type is caught by the loader (``loader.py``); a value of the right type but out of
range (``trainer.batch_size=0``, ``optimizer.lr=-1``) is caught here, before anything runs,
with a message naming the key, the value and what is allowed. Rules are keyed by the
dataclass that declares the field, so configs that extend a section (the distillation
config's ``data``) inherit its rules.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from oncloudn.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: ``low``/``high`` bounds (``None``: unbounded).

    Attributes:
        low: Lower bound.
        high: Upper bound.
        low_open: ``low`` itself is not allowed.
        high_open: ``high`` itself is not allowed.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: float) -> bool:
        """Whether ``value`` (finite) lies in the range."""
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (
            self.high is not None and (value > self.high or (self.high_open and value == self.high))
        )

    def describe(self) -> str:
        """The range in words, e.g. ``> 0`` or ``in [0, 1]``."""
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


AT_LEAST_1 = Range(low=1)
AT_LEAST_0 = Range(low=0)
POSITIVE = Range(low=0, low_open=True)
FRACTION = Range(low=0, high=1)
OPEN_FRACTION = Range(low=0, high=1, low_open=True, high_open=True)

RULES: dict[str, dict[str, Range]] = {
    "DataConfig": {
        "n_folds": Range(low=2),
        "fold": AT_LEAST_0,
        "num_workers": AT_LEAST_0,
        "max_chips": AT_LEAST_1,
    },
    "LossTerm": {"weight": AT_LEAST_0},
    "OptimizerConfig": {"lr": POSITIVE, "weight_decay": AT_LEAST_0, "momentum": FRACTION},
    "ScheduleConfig": {"warmup_steps": AT_LEAST_0, "min_lr_ratio": FRACTION},
    "TrainerConfig": {
        "epochs": AT_LEAST_1,
        "batch_size": AT_LEAST_1,
        "grad_accum": AT_LEAST_1,
        "early_stopping_patience": AT_LEAST_1,
        "val_every": AT_LEAST_1,
        "max_steps_per_epoch": AT_LEAST_1,
        "val_batch_size": AT_LEAST_1,
        "threshold": OPEN_FRACTION,
        "cpu_threads": AT_LEAST_1,
    },
    "DistillationConfig": {
        "temperature": POSITIVE,
        "alpha": FRACTION,
        "disagreement_weight": FRACTION,
        "cache_batch_size": AT_LEAST_1,
    },
}
"""Declaring class name -> field -> allowed range (``None`` values always pass)."""


def _rules_for(cls: type) -> dict[str, Range]:
    rules: dict[str, Range] = {}
    for base in reversed(cls.__mro__):
        rules.update(RULES.get(base.__name__, {}))
    return rules


def _check_node(node: Any, where: str) -> None:
    if isinstance(node, list):
        for index, item in enumerate(node):
            _check_node(item, f"{where}[{index}]")
        return
    if not dataclasses.is_dataclass(node) or isinstance(node, type):
        return
    rules = _rules_for(type(node))
    for item in dataclasses.fields(node):
        value = getattr(node, item.name)
        key = f"{where}.{item.name}" if where else item.name
        rule = rules.get(item.name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if rule is not None and number and not rule.allows(float(value)):
            raise ConfigError(f"{key} must be {rule.describe()}, got {value!r}")
        _check_node(value, key)


def check_ranges(config: Any) -> None:
    """Check every numeric key of a config tree against :data:`RULES`.

    Also checks that ``data.fold`` names one of the ``data.n_folds`` folds.

    Raises:
        ConfigError: The first value out of range, named by its key (e.g.
            ``trainer.batch_size must be >= 1, got 0``).
    """
    _check_node(config, "")
    data = getattr(config, "data", None)
    fold, n_folds = getattr(data, "fold", None), getattr(data, "n_folds", None)
    if fold is not None and n_folds is not None and fold >= n_folds:
        raise ConfigError(
            f"data.fold {fold} does not exist with data.n_folds {n_folds}; folds are "
            f"0..{n_folds - 1} (or null to train every fold)"
        )

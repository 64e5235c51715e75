"""Optimizers (Adam, AdamW, SGD), per-step learning-rate schedules and the AMP scaler."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from oncloudn.config import OptimizerConfig, ScheduleConfig
from oncloudn.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")


def build_optimizer(params, config: OptimizerConfig) -> torch.optim.Optimizer:
    """The configured optimizer over ``params``.

    Raises:
        ConfigError: An unknown optimizer name.
    """
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    raise ConfigError(
        f"unknown optimizer.name {config.name!r}; choose one of: {', '.join(OPTIMIZERS)}"
    )


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, lr: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler stepped once per optimizer step over ``total_steps`` steps.

    Raises:
        ConfigError: An unknown schedule name.
    """
    total_steps = max(1, total_steps)
    warmup = max(0, config.warmup_steps)
    if config.name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total_steps, warmup, config.min_lr_ratio)
        )
    if config.name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: (step + 1) / warmup if step < warmup else 1.0
        )
    if config.name == "onecycle":
        pct = warmup / total_steps if warmup else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lr,
            total_steps=total_steps + 1,
            pct_start=min(max(pct, 1e-3), 0.99),
            cycle_momentum=isinstance(optimizer, torch.optim.SGD),
        )
    raise ConfigError(
        f"unknown schedule.name {config.name!r}; choose one of: {', '.join(SCHEDULES)}"
    )


@dataclass
class Optimization:
    """What one optimizer step updates, stepped in this order by the training step.

    Attributes:
        optimizer: The optimizer.
        scaler: The AMP gradient scaler (disabled without AMP).
        scheduler: The per-step learning-rate schedule (``None``: constant, e.g. benchmarks).
    """

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: Any = None

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, scheduler and scaler states (checkpoint keys of ``last.pt``)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the states saved by :meth:`state_dict`."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

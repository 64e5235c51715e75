"""The training step and epoch: forward, injected objective, backward, optimizer step.

:func:`train_step` is the one step: the trainer's epochs and ``bench train`` both run it, so
the benchmark measures exactly what training does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from oncloudn.config import TrainerConfig
from oncloudn.training.objective import Batch, Objective
from oncloudn.training.optim import Optimization


@dataclass
class Placement:
    """Where and how a model runs.

    Attributes:
        device: The device of the model and batches.
        amp: Mixed precision (autocast) in the forward pass.
        channels_last: Images in channels-last memory format.
    """

    device: torch.device
    amp: bool = False
    channels_last: bool = False

    @classmethod
    def of(cls, config: TrainerConfig, device: torch.device) -> Placement:
        """AMP and channels-last as configured, on CUDA only."""
        cuda = device.type == "cuda"
        return cls(device, bool(config.amp and cuda), bool(config.channels_last and cuda))

    def autocast(self) -> Any:
        """The forward pass's autocast context (a no-op without AMP)."""
        return torch.autocast(device_type=self.device.type, enabled=self.amp)

    def image(self, image: torch.Tensor) -> torch.Tensor:
        """An image batch on the device, channels-last when configured."""
        image = image.to(self.device, non_blocking=True)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return image

    def batch(self, batch: Batch) -> Batch:
        """Every tensor of a batch on the device (other values, e.g. chip ids, as they are)."""
        moved = {
            key: value.to(self.device, non_blocking=True)
            for key, value in batch.items()
            if isinstance(value, torch.Tensor) and key != "image"
        }
        return {**batch, **moved, "image": self.image(batch["image"])}


def train_step(
    model: nn.Module,
    batch: Batch,
    objective: Objective,
    optimization: Optimization,
    placement: Placement,
    accum: int = 1,
    apply: bool = True,
) -> float:
    """One training step: forward, objective, backward; optionally the optimizer step.

    Args:
        model: The model (maybe DDP-wrapped), in train mode.
        batch: A batch as the loaders give it (see ``objective.py``).
        objective: The loss of logits on the batch.
        optimization: Optimizer, AMP scaler and scheduler.
        placement: Device, AMP and channels-last.
        accum: Batches accumulated per optimizer step (the loss is divided by it).
        apply: Step optimizer, scaler and scheduler and zero the gradients after backward
            (the last batch of an accumulation group).

    Returns:
        The batch's loss (before division by ``accum``).
    """
    batch = placement.batch(batch)
    with placement.autocast():
        logits = model(batch["image"])
    loss = objective(logits, batch)
    optimization.scaler.scale(loss / accum).backward()
    if apply:
        optimization.scaler.step(optimization.optimizer)
        optimization.scaler.update()
        optimization.optimizer.zero_grad(set_to_none=True)
        if optimization.scheduler is not None:
            optimization.scheduler.step()
    return float(loss.detach())


def train_epoch(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    objective: Objective,
    optimization: Optimization,
    placement: Placement,
    config: TrainerConfig,
    label: str = "",
    show: bool = True,
) -> float:
    """One epoch of :func:`train_step`; returns the mean loss of this process's batches.

    Args:
        model: The model (maybe DDP-wrapped).
        loader: The epoch's training loader.
        objective: The loss.
        optimization: Optimizer, AMP scaler and scheduler.
        placement: Device, AMP and channels-last.
        config: ``max_steps_per_epoch`` and ``grad_accum``.
        label: Progress-bar label.
        show: Show the progress bar (rank 0).
    """
    model.train()
    n_batches = len(loader)
    if config.max_steps_per_epoch is not None:
        n_batches = min(n_batches, config.max_steps_per_epoch)
    accum = max(1, config.grad_accum)
    total_loss = 0.0
    optimization.optimizer.zero_grad(set_to_none=True)
    progress = tqdm(total=n_batches, desc=label, leave=False, disable=not show)
    for index, batch in enumerate(loader):
        if index >= n_batches:
            break
        apply = (index + 1) % accum == 0 or index + 1 == n_batches
        total_loss += train_step(model, batch, objective, optimization, placement, accum, apply)
        progress.update(1)
        progress.set_postfix(loss=f"{total_loss / (index + 1):.4f}")
    progress.close()
    return total_loss / max(1, n_batches)

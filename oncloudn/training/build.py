"""Building a fold's training: run state, model, objective, optimization and data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from oncloudn.config import TrainConfig
from oncloudn.models.registry import create_model
from oncloudn.training import data as tdata
from oncloudn.training.augment import build_augmentation
from oncloudn.training.checkpoint import seed_everything
from oncloudn.training.distributed import DistContext, resolve_device
from oncloudn.training.objective import Objective, build_objective
from oncloudn.training.optim import Optimization, build_optimizer, build_scheduler
from oncloudn.training.step import Placement


def fold_dir(config: TrainConfig, fold: int) -> Path:
    """The model folder of fold ``fold`` under the run folder."""
    return Path(config.trainer.out_dir) / f"fold_{fold}"


@dataclass
class FoldRun:
    """Who trains which fold where.

    Attributes:
        config: The resolved config (``data.fold`` is the fold).
        fold: The held-out fold.
        ctx: The DDP context.
        folds_path: The folds file (its hash goes into the model folder).
        placement: Device, AMP and channels-last of this process.
        source: Where the chips come from (lists, reads and describes them).
    """

    config: TrainConfig
    fold: int
    ctx: DistContext
    folds_path: Path
    placement: Placement
    source: tdata.ChipSource

    @classmethod
    def create(
        cls,
        config: TrainConfig,
        fold: int,
        ctx: DistContext,
        folds_path: Path,
        source: tdata.ChipSource | None = None,
    ) -> FoldRun:
        """The run of ``fold`` on this process's device (``cuda:<local_rank>`` under DDP)."""
        device = resolve_device(config.trainer.device, ctx.local_rank)
        placement = Placement.of(config.trainer, device)
        return cls(config, fold, ctx, folds_path, placement, source or tdata.RootChips(config))

    @property
    def dir(self) -> Path:
        """The fold's model folder."""
        return fold_dir(self.config, self.fold)


@dataclass
class FoldParts:
    """What a fold's training loop works with.

    Attributes:
        model: The model (seeded from ``trainer.seed``, on the device, not yet DDP-wrapped).
        objective: The loss, on the device.
        optimization: Optimizer, scheduler and AMP scaler.
        train_set: The augmented training chips.
        val_loader: This process's share of the validation chips (``None`` if it has none).
        total_steps: Optimizer steps of the whole training.
    """

    model: nn.Module
    objective: Objective
    optimization: Optimization
    train_set: tdata.TrainingDataset
    val_loader: torch.utils.data.DataLoader | None
    total_steps: int


def build_model(config: TrainConfig, placement: Placement) -> nn.Module:
    """The config's model, initialised from ``trainer.seed``, on the device."""
    seed_everything(config.trainer.seed)
    model = create_model(config.model, config.data.bands, config.data.normalization)
    model = model.to(placement.device)
    if placement.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def steps_per_epoch(n_chips: int, config: TrainConfig, ctx: DistContext) -> int:
    """Optimizer steps per epoch of one process (sharding, batch, step cap, accumulation)."""
    per_process = -(-n_chips // ctx.world_size)
    batches = -(-per_process // config.trainer.batch_size)
    if config.trainer.max_steps_per_epoch is not None:
        batches = min(batches, config.trainer.max_steps_per_epoch)
    return -(-batches // max(1, config.trainer.grad_accum))


def build_fold(
    run: FoldRun,
    chips: tdata.FoldChips,
    objective: Objective | None = None,
    targets: tdata.TargetSource | None = None,
) -> FoldParts:
    """Build model, objective, optimization and data of a fold.

    Args:
        run: The fold's run.
        chips: The fold's chips.
        objective: The loss (default: the config's label loss).
        targets: Extra per-pixel targets added to the training samples.

    Raises:
        ConfigError: Invalid model, loss, augmentation, optimizer or schedule settings.
    """
    config, ctx = run.config, run.ctx
    model = build_model(config, run.placement)
    objective = (objective or build_objective(config)).to(run.placement.device)
    augmenter = build_augmentation(config.augmentation, targets.kinds if targets else None)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    total_steps = config.trainer.epochs * steps_per_epoch(len(chips.train), config, ctx)
    scheduler = build_scheduler(optimizer, config.schedule, config.optimizer.lr, total_steps)
    scaler = torch.amp.GradScaler(run.placement.device.type, enabled=run.placement.amp)
    base = run.source.dataset(chips.train, training=True)
    train_set = tdata.TrainingDataset(base, augmenter, config.trainer.seed, targets)
    val_ids = chips.val[ctx.rank :: ctx.world_size]
    val_set = run.source.dataset(val_ids, training=False) if val_ids else None
    val_loader = tdata.eval_loader(val_set, config) if val_set is not None else None
    return FoldParts(
        model=model,
        objective=objective,
        optimization=Optimization(optimizer, scaler, scheduler),
        train_set=train_set,
        val_loader=val_loader,
        total_steps=total_steps,
    )

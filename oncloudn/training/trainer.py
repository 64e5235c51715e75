"""The config-driven trainer: one model folder per fold, resumable, DDP-aware.

Run layout (``trainer.out_dir``)::

    folds.csv                  location-grouped folds (created when absent; hash recorded)
    fold_<k>/                  a model folder (manifest.json, weights.pt = best epoch,
                               config.yaml, metrics.json) plus last.pt (resume checkpoint)
    oof/fold_<k>.npz           out-of-fold probabilities of the fold's held-out chips

The trainer is composed of small pieces: ``build.py`` (model, objective, optimization, data),
``step.py`` (the training step and epoch), ``validate.py`` (competition metric, OOF file),
``checkpoint.py`` (``last.pt``), ``fold_folder.py`` (the best epoch's model folder) and
``epoch_log.py``. What it minimises is an injected :class:`~oncloudn.training.objective.Objective`
(default: the label loss of ``loss.terms``); extra per-pixel targets for it come from an
injected :class:`~oncloudn.training.data.TargetSource` and follow the augmentation.

Reproducibility: the model is initialised from ``seed``; each epoch reseeds the sampler,
augmentation and torch from ``(seed, epoch)``; ``last.pt`` carries optimizer, scheduler, AMP
scaler and RNG states. Resuming after a kill therefore reproduces the uninterrupted run
(bit-identical on CPU with ``num_workers=0``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oncloudn.config import TrainConfig
from oncloudn.config.ranges import check_ranges
from oncloudn.errors import ConfigError
from oncloudn.training import data as tdata
from oncloudn.training.build import FoldRun, build_fold, fold_dir
from oncloudn.training.checkpoint import (
    CHECKPOINT_NAME,
    derive_seed,
    load_training_state,
    save_training_state,
    seed_everything,
)
from oncloudn.training.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    init_distributed,
    shutdown,
)
from oncloudn.training.epoch_log import EpochLog
from oncloudn.training.fold_folder import save_best_folder
from oncloudn.training.objective import Objective
from oncloudn.training.records import FoldResult, Progress, TrainResult
from oncloudn.training.step import train_epoch
from oncloudn.training.validate import evaluate, write_fold_oof

logger = logging.getLogger(__name__)

__all__ = ["FoldResult", "FoldTrainer", "TrainResult", "fold_dir", "train", "train_fold"]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def resolve_resume(folder: Path, resume: bool | None) -> Path | None:
    """The checkpoint to resume from: ``None`` = if present, ``True`` = required, ``False`` = none.

    Raises:
        FileNotFoundError: ``resume=True`` and there is no checkpoint.
    """
    checkpoint = folder / CHECKPOINT_NAME
    if resume is False:
        return None
    if checkpoint.is_file():
        return checkpoint
    if resume is True:
        raise FileNotFoundError(
            f"--resume: no checkpoint {checkpoint}; train without --resume to start fresh"
        )
    return None


class FoldTrainer:
    """Trains one fold: build, resume, epochs of steps and validations, checkpoints, OOF.

    Args:
        run: Which fold, where.
        chips: The fold's chips.
        objective: The loss (default: the config's label loss).
        targets: Extra per-pixel targets added to the training samples.
    """

    def __init__(
        self,
        run: FoldRun,
        chips: tdata.FoldChips,
        objective: Objective | None = None,
        targets: tdata.TargetSource | None = None,
    ) -> None:
        if run.config.trainer.epochs < 1:
            raise ConfigError(f"trainer.epochs must be >= 1 (got {run.config.trainer.epochs})")
        self.run = run
        self.chips = chips
        self.parts = build_fold(run, chips, objective, targets)
        self.model: nn.Module = self.parts.model
        self.progress = Progress()

    @property
    def network(self) -> nn.Module:
        """The trained network (inside the model wrapper and DDP)."""
        return _unwrap(self.model).network

    def resume(self, resume: bool | None) -> None:
        """Restore ``last.pt`` (see :func:`resolve_resume`) before any DDP wrapping."""
        path = resolve_resume(self.run.dir, resume)
        if path is None:
            return
        self.progress = load_training_state(path, self.network, self.parts.optimization)
        if self.run.ctx.is_main:
            logger.info(
                "fold %d: resuming from %s after epoch %d",
                self.run.fold, path, self.progress.epoch,
            )  # fmt: skip

    def fit(self) -> FoldResult:
        """Train the remaining epochs, then write the OOF file of the best weights."""
        run, ctx = self.run, self.run.ctx
        if ctx.enabled:
            device = run.placement.device
            device_ids = [device.index] if device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        if ctx.is_main:
            logger.info(
                "fold %d: %d train / %d val chips (%d excluded), %d optimizer steps, "
                "objective %s, device %s",
                run.fold, len(self.chips.train), len(self.chips.val), self.chips.excluded,
                self.parts.total_steps, self.parts.objective.name, run.placement.device,
            )  # fmt: skip
        trainer = run.config.trainer
        log = EpochLog(run.fold, trainer.epochs, run.dir, trainer.log_tensorboard, ctx.is_main)
        try:
            while not self.progress.stopped_early and self.progress.epoch < trainer.epochs:
                self.run_epoch(log)
        finally:
            log.close()
        return self.finish()

    def run_epoch(self, log: EpochLog) -> None:
        """Train one epoch, validate when due, log and checkpoint."""
        run, config = self.run, self.run.config
        started = time.perf_counter()
        epoch = self.progress.epoch
        seed_everything(derive_seed(config.trainer.seed, epoch))
        loader = tdata.train_loader(self.parts.train_set, config, epoch, run.ctx)
        loss = train_epoch(
            self.model,
            loader,
            self.parts.objective,
            self.parts.optimization,
            run.placement,
            config.trainer,
            label=f"fold {run.fold} epoch {epoch + 1}/{config.trainer.epochs}",
            show=run.ctx.is_main,
        )
        epoch = self.progress.epoch = epoch + 1
        optimizer = self.parts.optimization.optimizer
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": loss,
            "lr": optimizer.param_groups[0]["lr"],
        }
        if epoch % max(1, config.trainer.val_every) == 0 or epoch == config.trainer.epochs:
            self.validate(record)
        record["seconds"] = time.perf_counter() - started
        self.progress.history.append(record)
        log.epoch(record, self.progress.best)
        if run.ctx.is_main:
            path = run.dir / CHECKPOINT_NAME
            save_training_state(path, self.network, self.parts.optimization, self.progress)
        barrier(run.ctx)

    def validate(self, record: dict[str, Any]) -> None:
        """Score the epoch, keep the best epoch's model folder, decide early stopping."""
        run, ctx, best = self.run, self.run.ctx, self.progress.best
        inter = union = 0.0
        if self.parts.val_loader is not None:
            inter, union = evaluate(
                _unwrap(self.model),
                self.parts.val_loader,
                run.placement,
                run.config.trainer.threshold,
                show=ctx.is_main,
            )[:2]
        inter, union = all_reduce_sum([inter, union], ctx, run.placement.device)
        record["val_jaccard"] = inter / union if union else float("nan")
        if best.record(record["epoch"], inter, union) and ctx.is_main:
            history = [*self.progress.history, record]
            save_best_folder(run, _unwrap(self.model), self.chips, best, history)
        patience = run.config.trainer.early_stopping_patience
        if patience is not None and best.stale >= patience:
            self.progress.stopped_early = True
            if ctx.is_main:
                logger.info("fold %d: early stopping after epoch %d", run.fold, record["epoch"])

    def finish(self) -> FoldResult:
        """Reload the best weights, write the OOF file, return the fold's result."""
        run, best = self.run, self.progress.best
        barrier(run.ctx)
        device = run.placement.device
        weights = torch.load(run.dir / "weights.pt", map_location=device, weights_only=True)
        self.network.load_state_dict(weights)
        inter, union, path = write_fold_oof(_unwrap(self.model), self.chips, run)
        if run.ctx.is_main:
            logger.info(
                "fold %d done: best val Jaccard %.4f at epoch %d; OOF %s (%d chips)",
                run.fold, inter / union if union else math.nan, best.epoch, path,
                len(self.chips.oof),
            )  # fmt: skip
        return FoldResult(
            fold=run.fold,
            model_dir=run.dir,
            best_score=float(best.score) if best.score is not None else float("nan"),
            best_epoch=best.epoch,
            epochs_run=self.progress.epoch,
            oof_path=path,
            intersection=inter,
            union=union,
            history=self.progress.history,
        )


def train_fold(
    config: TrainConfig,
    fold: int,
    resume: bool | None = None,
    ctx: DistContext | None = None,
    folds: tuple[Any, Path] | None = None,
    objective: Objective | None = None,
    targets: tdata.TargetSource | None = None,
    source: tdata.ChipSource | None = None,
) -> FoldResult:
    """Train one fold into ``<out_dir>/fold_<fold>`` and write its OOF predictions.

    Args:
        config: The resolved config (``data.fold`` is ignored in favour of ``fold``).
        fold: The held-out fold.
        resume: ``None`` resumes when ``last.pt`` exists, ``True`` requires it, ``False``
            starts afresh (overwriting).
        ctx: The DDP context (default: joins torchrun's group when launched by it).
        folds: ``(folds frame, folds path)`` from :func:`tdata.prepare_folds` (computed
            when omitted).
        objective: The loss (default: the label loss of ``loss.terms``).
        targets: Extra per-pixel targets for the objective (they follow the augmentation).
        source: Where the chips come from (default: the labelled ``data.root``).

    Returns:
        The fold's result.

    Raises:
        ConfigError, DataError: Invalid config or data.
    """
    own_ctx = ctx is None
    ctx = ctx or init_distributed(config.trainer.device)
    try:
        frame, folds_path = folds or tdata.prepare_folds(config, ctx, source)
        config = replace(config, data=replace(config.data, fold=fold))
        run = FoldRun.create(config, fold, ctx, folds_path, source)
        chips = tdata.fold_chips(config, frame, fold)
        trainer = FoldTrainer(run, chips, objective, targets)
        trainer.resume(resume)
        return trainer.fit()
    finally:
        if own_ctx:
            shutdown(ctx)


def train(
    config: TrainConfig,
    resume: bool | None = None,
    objective: Objective | None = None,
    targets: tdata.TargetSource | None = None,
    source: tdata.ChipSource | None = None,
) -> TrainResult:
    """Train ``data.fold`` (or every fold when it is ``None``) of a config.

    Works in one process or under ``torchrun`` (DDP: every rank calls ``train``; rank 0
    writes folds file, checkpoints, model folders and logs).

    Args:
        config: The resolved config.
        resume: See :func:`train_fold`.
        objective: The loss (default: the label loss of ``loss.terms``).
        targets: Extra per-pixel targets for the objective.
        source: Where the chips come from (default: the labelled ``data.root``; a
            distillation run passes its roots, labelled or not).

    Returns:
        The run's result (one :class:`FoldResult` per trained fold).

    Raises:
        ConfigError: A value out of range (e.g. ``trainer.batch_size=0``).
    """
    check_ranges(config)  # a config built in Python skips the loader's check
    if config.trainer.cpu_threads is not None:
        torch.set_num_threads(max(1, config.trainer.cpu_threads))
    ctx = init_distributed(config.trainer.device)
    try:
        frame, folds_path = tdata.prepare_folds(config, ctx, source)
        all_folds = sorted(int(value) for value in frame["fold"].unique())
        folds = all_folds if config.data.fold is None else [config.data.fold]
        results = [
            train_fold(
                config,
                fold,
                resume,
                ctx,
                (frame, folds_path),
                objective=objective,
                targets=targets,
                source=source,
            )
            for fold in folds
        ]
        return TrainResult(Path(config.trainer.out_dir), folds_path, results)
    finally:
        shutdown(ctx)

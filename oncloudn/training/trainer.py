"""The config-driven trainer: one model folder per fold, resumable, DDP-aware.

Run layout (``trainer.out_dir``)::

    folds.csv                  location-grouped folds (created when absent; hash recorded)
    fold_<k>/                  a model folder (manifest.json, weights.pt = best epoch,
                               config.yaml, metrics.json) plus last.pt (resume checkpoint)
    oof/fold_<k>.npz           out-of-fold probabilities of the fold's held-out chips

Losses act on the binary cloud logit ``logits[:, 1] - logits[:, 0]`` of the model's 2-class
output (see ``losses.py``). Validation uses the competition metric: pooled Jaccard of
``probability >= threshold`` over the held-out fold.

Reproducibility: the model is initialised from ``seed``; each epoch reseeds the sampler,
augmentation and torch from ``(seed, epoch)``; ``last.pt`` carries optimizer, scheduler, AMP
scaler and RNG states. Resuming after a kill therefore reproduces the uninterrupted run
(bit-identical on CPU with ``num_workers=0``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from oncloudn.config import TrainConfig, config_to_dict
from oncloudn.errors import ConfigError
from oncloudn.models.folder import save_model_folder
from oncloudn.models.registry import create_model
from oncloudn.runtime.manifest import Manifest
from oncloudn.scoring.metric import chip_counts
from oncloudn.training import data as tdata
from oncloudn.training.augment import build_augmentation
from oncloudn.training.checkpoint import (
    CHECKPOINT_NAME,
    derive_seed,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from oncloudn.training.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    init_distributed,
    resolve_device,
    shutdown,
)
from oncloudn.training.losses import IGNORE_INDEX, build_loss
from oncloudn.training.oof import merge_oof_parts, oof_path, write_oof
from oncloudn.training.optim import build_optimizer, build_scheduler

logger = logging.getLogger(__name__)


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


def fold_dir(config: TrainConfig, fold: int) -> Path:
    """The model folder of fold ``fold`` under the run folder."""
    return Path(config.trainer.out_dir) / f"fold_{fold}"


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _cloud_logit(logits: torch.Tensor) -> torch.Tensor:
    """Binary cloud logit ``[N, H, W]`` of 2-class logits ``[N, 2, H, W]``."""
    return logits[:, 1] - logits[:, 0]


class _Run:
    """State of one fold's training (kept small; the loop lives in :func:`train_fold`)."""

    def __init__(self, config: TrainConfig, fold: int, ctx: DistContext, folds_path: Path):
        self.config = config
        self.fold = fold
        self.ctx = ctx
        self.folds_path = folds_path
        self.dir = fold_dir(config, fold)
        self.device = resolve_device(config.trainer.device, ctx.local_rank)
        self.cuda = self.device.type == "cuda"
        self.amp = bool(config.trainer.amp and self.cuda)
        self.channels_last = bool(config.trainer.channels_last and self.cuda)

    def autocast(self) -> Any:
        return torch.autocast(device_type=self.device.type, enabled=self.amp)


def _build_model(config: TrainConfig, run: _Run) -> nn.Module:
    seed_everything(config.trainer.seed)
    model = create_model(config.model, config.data.bands, config.data.normalization)
    model = model.to(run.device)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _manifest(
    model: nn.Module, config: TrainConfig, fold: int, metrics: dict[str, Any]
) -> Manifest:
    """The fold's manifest: the one the model carries, named, with the threshold and metrics."""
    run_name = Path(config.trainer.out_dir).name or "model"
    return replace(
        _unwrap(model).manifest,
        name=f"{run_name}-fold{fold}",
        threshold=float(config.trainer.threshold),
        provenance={"trainer": "oncloudn.training", "fold": fold},
        metrics=dict(metrics),
    )


def evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    run: _Run,
    score_ids: set[str] | None = None,
    collect: bool = False,
    desc: str = "val",
) -> tuple[float, float, dict[str, np.ndarray]]:
    """Pooled intersection and union of ``probability >= threshold`` (this process's chips).

    Args:
        model: The (unwrapped) model.
        loader: An ordered labelled loader.
        run: The fold's run state.
        score_ids: Chips counted in the metric (default: all of the loader's).
        collect: Also return ``{chip_id: float16 probability}`` of every chip.
        desc: Progress-bar label.

    Returns:
        ``(intersection, union, probabilities)``.
    """
    model.eval()
    threshold = run.config.trainer.threshold
    intersection = union = 0.0
    probabilities: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, disable=not run.ctx.is_main):
            image = batch["image"].to(run.device, non_blocking=True)
            if run.channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            with run.autocast():
                logits = model(image)
            proba = torch.sigmoid(_cloud_logit(logits).float()).cpu().numpy()
            masks = batch["mask"].numpy()
            valid = batch["valid"].numpy()
            for index, chip_id in enumerate(batch["chip_id"]):
                if collect:
                    probabilities[chip_id] = proba[index].astype(np.float16)
                if score_ids is not None and chip_id not in score_ids:
                    continue
                label = np.where(valid[index], masks[index], IGNORE_INDEX).astype(np.uint8)
                counts = chip_counts(proba[index] >= threshold, label, ignore_value=IGNORE_INDEX)
                intersection += counts.intersection
                union += counts.union
    return intersection, union, probabilities


def _train_epoch(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    run: _Run,
    epoch: int,
) -> float:
    """One epoch of training; returns the mean loss of this process's batches."""
    config = run.config.trainer
    model.train()
    n_batches = len(loader)
    if config.max_steps_per_epoch is not None:
        n_batches = min(n_batches, config.max_steps_per_epoch)
    accum = max(1, config.grad_accum)
    total_loss = 0.0
    optimizer.zero_grad(set_to_none=True)
    progress = tqdm(
        total=n_batches,
        desc=f"fold {run.fold} epoch {epoch + 1}/{config.epochs}",
        leave=False,
        disable=not run.ctx.is_main,
    )
    for index, batch in enumerate(loader):
        if index >= n_batches:
            break
        image = batch["image"].to(run.device, non_blocking=True)
        if run.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        valid = batch["valid"].to(run.device, non_blocking=True)
        mask = batch["mask"].to(run.device, non_blocking=True)
        target = torch.where(valid, mask, torch.full_like(mask, IGNORE_INDEX))
        with run.autocast():
            logits = model(image)
        loss = criterion(_cloud_logit(logits.float()), target)
        scaler.scale(loss / accum).backward()
        total_loss += float(loss.detach())
        if (index + 1) % accum == 0 or index + 1 == n_batches:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        progress.update(1)
        progress.set_postfix(loss=f"{total_loss / (index + 1):.4f}")
    progress.close()
    return total_loss / max(1, n_batches)


def _steps_per_epoch(n_chips: int, config: TrainConfig, ctx: DistContext) -> int:
    per_process = -(-n_chips // ctx.world_size)
    batches = -(-per_process // config.trainer.batch_size)
    if config.trainer.max_steps_per_epoch is not None:
        batches = min(batches, config.trainer.max_steps_per_epoch)
    return -(-batches // max(1, config.trainer.grad_accum))


def _tensorboard(run: _Run) -> Any:
    if not (run.config.trainer.log_tensorboard and run.ctx.is_main):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("trainer.log_tensorboard is set but tensorboard is not installed; skipped")
        return None
    return SummaryWriter(log_dir=str(run.dir / "tensorboard"))


def _checkpoint_state(
    model, optimizer, scheduler, scaler, epoch: int, best: dict[str, Any], history, stopped_early
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "model": _unwrap(model).network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "best": dict(best),
        "history": list(history),
        "stopped_early": stopped_early,
    }


def _resolve_resume(run: _Run, resume: bool | None) -> Path | None:
    checkpoint = run.dir / CHECKPOINT_NAME
    if resume is False:
        return None
    if checkpoint.is_file():
        return checkpoint
    if resume is True:
        raise FileNotFoundError(
            f"--resume: no checkpoint {checkpoint}; train without --resume to start fresh"
        )
    return None


def _write_oof(model: nn.Module, chips: tdata.FoldChips, run: _Run) -> tuple[float, float, Path]:
    """Predict the fold's held-out chips with the best weights and write the OOF file."""
    ctx = run.ctx
    shard = chips.oof[ctx.rank :: ctx.world_size]
    intersection = union = 0.0
    probabilities: dict[str, np.ndarray] = {}
    if shard:
        dataset = tdata.make_dataset(run.config, shard)
        loader = tdata.eval_loader(dataset, run.config)
        intersection, union, probabilities = evaluate(
            model, loader, run, score_ids=set(chips.val), collect=True, desc="oof"
        )
    intersection, union = all_reduce_sum([intersection, union], ctx, run.device)
    path = oof_path(run.config.trainer.out_dir, run.fold)
    if ctx.enabled:
        part = path.with_name(f"{path.stem}.part{ctx.rank}.npz")
        write_oof(part, probabilities)
        barrier(ctx)
        if ctx.is_main:
            parts = [path.with_name(f"{path.stem}.part{r}.npz") for r in range(ctx.world_size)]
            merge_oof_parts(parts, path)
        barrier(ctx)
    else:
        write_oof(path, probabilities)
    return intersection, union, path


def train_fold(
    config: TrainConfig,
    fold: int,
    resume: bool | None = None,
    ctx: DistContext | None = None,
    folds: tuple[Any, Path] | None = None,
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

    Returns:
        The fold's result.

    Raises:
        ConfigError, DataError: Invalid config or data.
    """
    own_ctx = ctx is None
    ctx = ctx or init_distributed(config.trainer.device)
    try:
        frame, folds_path = folds or tdata.prepare_folds(config, ctx)
        config = replace(config, data=replace(config.data, fold=fold))
        run = _Run(config, fold, ctx, folds_path)
        return _train_fold(run, frame, resume)
    finally:
        if own_ctx:
            shutdown(ctx)


def _train_fold(run: _Run, frame: Any, resume: bool | None) -> FoldResult:
    config, ctx = run.config, run.ctx
    chips = tdata.fold_chips(config, frame, run.fold)
    if config.trainer.epochs < 1:
        raise ConfigError(f"trainer.epochs must be >= 1 (got {config.trainer.epochs})")
    model = _build_model(config, run)
    criterion = build_loss(config.loss.terms).to(run.device)
    augmenter = build_augmentation(config.augmentation)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    total_steps = config.trainer.epochs * _steps_per_epoch(len(chips.train), config, ctx)
    scheduler = build_scheduler(optimizer, config.schedule, config.optimizer.lr, total_steps)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.amp)
    best = {"score": None, "epoch": 0, "intersection": 0.0, "union": 0.0, "stale": 0}
    history: list[dict[str, Any]] = []
    start_epoch, stopped_early = 0, False
    checkpoint_path = _resolve_resume(run, resume)
    if checkpoint_path is not None:
        state = load_checkpoint(checkpoint_path, "cpu")  # RNG states must stay on CPU
        model.network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        best, history = dict(state["best"]), list(state["history"])
        start_epoch, stopped_early = int(state["epoch"]), bool(state["stopped_early"])
        if ctx.is_main:
            logger.info(
                "fold %d: resuming from %s after epoch %d", run.fold, checkpoint_path, start_epoch
            )
    if ctx.enabled:
        device_ids = [run.device.index] if run.cuda else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    train_set = tdata.TrainingDataset(
        tdata.make_dataset(config, chips.train), augmenter, config.trainer.seed
    )
    val_ids = chips.val[ctx.rank :: ctx.world_size]
    val_loader = tdata.eval_loader(tdata.make_dataset(config, val_ids), config) if val_ids else None
    writer = _tensorboard(run)
    if ctx.is_main:
        logger.info(
            "fold %d: %d train / %d val chips (%d excluded), %d optimizer steps, device %s",
            run.fold, len(chips.train), len(chips.val), chips.excluded, total_steps, run.device,
        )  # fmt: skip
    epoch = start_epoch
    while not stopped_early and epoch < config.trainer.epochs:
        started = time.perf_counter()
        seed_everything(derive_seed(config.trainer.seed, epoch))
        loader = tdata.train_loader(train_set, config, epoch, ctx)
        loss = _train_epoch(model, loader, criterion, optimizer, scheduler, scaler, run, epoch)
        epoch += 1
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": loss,
            "lr": optimizer.param_groups[0]["lr"],
        }
        if epoch % max(1, config.trainer.val_every) == 0 or epoch == config.trainer.epochs:
            inter, union = (
                evaluate(_unwrap(model), val_loader, run)[:2] if val_loader else (0.0, 0.0)
            )
            inter, union = all_reduce_sum([inter, union], ctx, run.device)
            score = inter / union if union else float("nan")
            record["val_jaccard"] = score
            if _improved(score, best["score"]):
                best.update(score=score, epoch=epoch, intersection=inter, union=union, stale=0)
                if ctx.is_main:
                    _save_best(run, model, chips, best, history + [record])
            else:
                best["stale"] += 1
            patience = config.trainer.early_stopping_patience
            if patience is not None and best["stale"] >= patience:
                stopped_early = True
                if ctx.is_main:
                    logger.info("fold %d: early stopping after epoch %d", run.fold, epoch)
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        if ctx.is_main:
            _log_epoch(run, record, best, writer)
            state = _checkpoint_state(
                model, optimizer, scheduler, scaler, epoch, best, history, stopped_early
            )
            save_checkpoint(run.dir / CHECKPOINT_NAME, state)
        barrier(ctx)
    if writer is not None:
        writer.close()
    return _finish_fold(run, model, chips, best, history, epoch)


def _improved(score: float, best: float | None) -> bool:
    """Whether ``score`` beats ``best`` (the first score always does; ``nan`` never does)."""
    if best is None:
        return True
    if np.isnan(score):
        return False
    return bool(np.isnan(best) or score > best)


def _save_best(run: _Run, model: nn.Module, chips: tdata.FoldChips, best, history) -> None:
    metrics = {
        "val_jaccard": best["score"],
        "best_epoch": best["epoch"],
        "fold": run.fold,
        "n_train_chips": len(chips.train),
        "n_val_chips": len(chips.val),
        "history": history,
    }
    save_model_folder(
        run.dir,
        _manifest(model, run.config, run.fold, metrics),
        state_dict=_unwrap(model).network.state_dict(),
        config=config_to_dict(run.config),
        metrics=metrics,
        folds_path=run.folds_path,
        training_data={
            "root": str(Path(run.config.data.root).resolve()),
            "split": run.config.data.split,
            "fold": run.fold,
            "n_train_chips": len(chips.train),
            "n_excluded": chips.excluded,
            "exclude_lists": list(run.config.data.exclude_lists),
        },
    )


def _log_epoch(run: _Run, record: dict[str, Any], best: dict[str, Any], writer: Any) -> None:
    score = record.get("val_jaccard")
    val = (
        f"val Jaccard {score:.4f} (best {best['score']:.4f} @{best['epoch']})"
        if score is not None
        else "no val"
    )
    logger.info(
        "fold %d epoch %d/%d: loss %.4f, %s, lr %.2e, %.1f s",
        run.fold, record["epoch"], run.config.trainer.epochs, record["loss"], val,
        record["lr"], record["seconds"],
    )  # fmt: skip
    if writer is not None:
        writer.add_scalar("loss/train", record["loss"], record["epoch"])
        writer.add_scalar("lr", record["lr"], record["epoch"])
        if score is not None:
            writer.add_scalar("jaccard/val", score, record["epoch"])


def _finish_fold(run: _Run, model, chips: tdata.FoldChips, best, history, epoch: int) -> FoldResult:
    """Reload the best weights, write the OOF file, return the fold's result."""
    barrier(run.ctx)
    weights = torch.load(run.dir / "weights.pt", map_location=run.device, weights_only=True)
    network = _unwrap(model).network
    network.load_state_dict(weights)
    inter, union, path = _write_oof(_unwrap(model), chips, run)
    if run.ctx.is_main:
        score = inter / union if union else float("nan")
        logger.info(
            "fold %d done: best val Jaccard %.4f at epoch %d; OOF %s (%d chips)",
            run.fold, score, best["epoch"], path, len(chips.oof),
        )  # fmt: skip
    return FoldResult(
        fold=run.fold,
        model_dir=run.dir,
        best_score=float(best["score"]) if best["score"] is not None else float("nan"),
        best_epoch=int(best["epoch"]),
        epochs_run=epoch,
        oof_path=path,
        intersection=inter,
        union=union,
        history=history,
    )


def train(config: TrainConfig, resume: bool | None = None) -> TrainResult:
    """Train ``data.fold`` (or every fold when it is ``None``) of a config.

    Works in one process or under ``torchrun`` (DDP: every rank calls ``train``; rank 0
    writes folds file, checkpoints, model folders and logs).

    Args:
        config: The resolved config.
        resume: See :func:`train_fold`.

    Returns:
        The run's result (one :class:`FoldResult` per trained fold).
    """
    if config.trainer.cpu_threads is not None:
        torch.set_num_threads(max(1, config.trainer.cpu_threads))
    ctx = init_distributed(config.trainer.device)
    try:
        frame, folds_path = tdata.prepare_folds(config, ctx)
        all_folds = sorted(int(value) for value in frame["fold"].unique())
        folds = all_folds if config.data.fold is None else [config.data.fold]
        results = [
            train_fold(config, fold, resume=resume, ctx=ctx, folds=(frame, folds_path))
            for fold in folds
        ]
        return TrainResult(Path(config.trainer.out_dir), folds_path, results)
    finally:
        shutdown(ctx)

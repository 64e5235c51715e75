"""``oncloudn distill``: train a student from a teacher, through the trainer.

:func:`distill` lists the run's chips over every root (held-out locations removed), fills
the teacher cache where needed (cached mode: every chip of the trained folds; either mode:
the validation chips of a fold without labelled ones, scored against the teacher), then
runs :func:`oncloudn.training.trainer.train` with the distillation objective, the cached or
online targets and the run's chip source. Checkpoints, resume, folds, OOF files and DDP are
the trainer's; the student's model folder is an ordinary one (the teacher is needed only
while training) whose provenance names the teacher and the data with their licences.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.distributed as dist

from oncloudn.config import DistillConfig, check_distill_config
from oncloudn.data.chips import DatasetPaths
from oncloudn.data.roots import ChipCatalog, RootSpec, build_catalog
from oncloudn.runtime.atomic import atomic_write_text
from oncloudn.training import data as tdata
from oncloudn.training.augment import PHOTOMETRIC
from oncloudn.training.distill.cache import CachedTargets, TargetCache, content_hashes
from oncloudn.training.distill.objective import DistillObjective
from oncloudn.training.distill.source import CleanImage, DistillChips
from oncloudn.training.distill.teacher import Teacher
from oncloudn.training.distributed import DistContext, init_distributed, resolve_device, shutdown
from oncloudn.training.losses import build_loss
from oncloudn.training.objective import LabelObjective
from oncloudn.training.records import TrainResult
from oncloudn.training.trainer import train

logger = logging.getLogger(__name__)

HOLDOUT_NAME = "holdout.csv"
CACHE_FOLDER = "teacher_cache"


def build_run_catalog(config: DistillConfig) -> ChipCatalog:
    """The run's chips: ``data.root`` then ``data.extra_roots``, locations held out.

    Raises:
        DataError: A missing root, an unknown held-out location or no chip left.
    """
    roots = [RootSpec(DatasetPaths(config.data.root, config.data.split), config.data.licence)]
    roots += [RootSpec(DatasetPaths(r.path, r.split), r.licence) for r in config.data.extra_roots]
    return build_catalog(
        roots, config.data.holdout_locations, use_labels=config.distillation.use_labels
    )


def build_teacher(config: DistillConfig, ctx: DistContext) -> Teacher:
    """The configured teacher on its device (``auto``: the training device)."""
    name = config.teacher.device if config.teacher.device != "auto" else config.trainer.device
    return Teacher(
        config.teacher.path,
        config.data.bands,
        config.teacher.tta,
        resolve_device(name, ctx.local_rank),
        config.teacher.licence,
    )


def cache_dir_of(config: DistillConfig) -> Path:
    """``distillation.cache_dir`` or ``<out_dir>/teacher_cache``."""
    return Path(config.distillation.cache_dir or Path(config.trainer.out_dir) / CACHE_FOLDER)


def fill_cache(
    config: DistillConfig,
    ctx: DistContext,
    catalog: ChipCatalog,
    teacher: Teacher,
    chip_ids: list[str],
) -> CachedTargets:
    """Cache the teacher's targets of ``chip_ids`` (rank 0 computes, the others wait)."""
    cache_dir = cache_dir_of(config)
    shared: list[dict[str, str] | None] = [None]
    if ctx.is_main:
        shared[0] = content_hashes(catalog, chip_ids, config.data.bands, cache_dir)
        cache = TargetCache.of(cache_dir, teacher)
        computed = cache.fill(
            teacher,
            catalog,
            shared[0],
            config.data.bands,
            config.distillation.cache_batch_size,
        )
        logger.info(
            "teacher cache %s: %d chip(s), %d computed now", cache.folder, len(chip_ids), computed
        )
    if ctx.enabled:
        dist.broadcast_object_list(shared, src=0)
    hashes = shared[0] or {}
    return CachedTargets(TargetCache.of(cache_dir, teacher), hashes, config.trainer.threshold)


def write_holdout(config: DistillConfig, catalog: ChipCatalog) -> Path:
    """List the held-out chips in ``<out_dir>/holdout.csv`` (``chip_id,location,root``)."""
    path = Path(config.trainer.out_dir) / HOLDOUT_NAME
    frame = catalog.held_out.copy()
    frame["root"] = [str(catalog.roots[int(i)].paths.root) for i in frame["root"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, frame[["chip_id", "location", "root"]].to_csv(index=False))
    return path


def plan_chips(
    config: DistillConfig, ctx: DistContext, source: DistillChips
) -> tuple[list[str], frozenset[str]]:
    """``(chips the cache must hold, unlabelled chips validated against the teacher)``.

    A fold whose validation chips have no labels is validated against the teacher on its
    held-out chips; cached mode also needs every chip the trained folds read.
    """
    frame, _ = tdata.prepare_folds(config, ctx, source)
    all_folds = sorted(int(value) for value in frame["fold"].unique())
    folds = all_folds if config.data.fold is None else [config.data.fold]
    cached = config.distillation.mode == "cached"
    needed: set[str] = set()
    reference: set[str] = set()
    for fold in folds:
        split = tdata.fold_chips(config, frame, fold)
        if not any(source.catalog.labelled(chip_id) for chip_id in split.val):
            reference.update(c for c in split.oof if not source.catalog.labelled(c))
        if cached:
            needed.update(split.train + split.oof)
    needed |= reference
    return sorted(needed), frozenset(reference)


def uses_photometric(config: DistillConfig) -> bool:
    """Whether the augmentation has photometric steps (the teacher never sees them)."""
    return any(step.name in PHOTOMETRIC for step in config.augmentation.steps)


def distill(
    config: DistillConfig, resume: bool | None = None, cache_only: bool = False
) -> TrainResult | None:
    """Distil the teacher into the configured student (see the module docstring).

    Args:
        config: The resolved distill config.
        resume: As for :func:`oncloudn.training.trainer.train`.
        cache_only: Fill the teacher cache and stop (``None`` is returned).

    Returns:
        The trainer's result (one student model folder per trained fold).

    Raises:
        ConfigError, DataError: Invalid config, teacher or data.
    """
    check_distill_config(config)
    if config.trainer.cpu_threads is not None:
        torch.set_num_threads(max(1, config.trainer.cpu_threads))
    ctx = init_distributed(config.trainer.device)
    try:
        catalog = build_run_catalog(config)
        teacher = build_teacher(config, ctx)
        described = teacher.describe()
        plain = DistillChips(config, catalog, described)
        if ctx.is_main:
            for root in catalog.describe():
                logger.info(
                    "distill: %(root)s: %(n_used)d of %(n_listed)d chips used, "
                    "%(n_labelled)d labelled",
                    root,
                )
            path = write_holdout(config, catalog)
            logger.info("distill: %d held-out chip(s) listed in %s", len(catalog.held_out), path)
        needed, reference_ids = plan_chips(config, ctx, plain)
        cached = fill_cache(config, ctx, catalog, teacher, needed) if needed else None
        if cache_only:
            return None
        online = config.distillation.mode == "online"
        targets: tdata.TargetSource | None = cached
        if online:
            targets = CleanImage(catalog, config.data.bands) if uses_photometric(config) else None
        label = LabelObjective(build_loss(config.loss.terms))
        objective = DistillObjective(label, config.distillation, teacher if online else None)
        reference = cached.reference if cached is not None else None
        source = DistillChips(config, catalog, described, reference, reference_ids)
        return train(config, resume, objective=objective, targets=targets, source=source)
    finally:
        shutdown(ctx)

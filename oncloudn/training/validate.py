"""Validation by the competition metric and the fold's out-of-fold (OOF) predictions.

:func:`forward_probability` is the only place validation runs the model: the prediction
core's array level with the trainer's forward pass injected, so validation scores what
``oncloudn predict`` and ``main.py`` would compute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from oncloudn.runtime.predict_array import input_multiple, predict_probabilities
from oncloudn.scoring.metric import chip_counts
from oncloudn.training import data as tdata
from oncloudn.training.build import FoldRun
from oncloudn.training.distributed import all_reduce_sum, barrier
from oncloudn.training.losses import IGNORE_INDEX
from oncloudn.training.objective import cloud_logit
from oncloudn.training.oof import merge_oof_parts, oof_path, write_oof
from oncloudn.training.step import Placement


def forward_probability(model: nn.Module, image: torch.Tensor, placement: Placement) -> np.ndarray:
    """Cloud probabilities ``[N, H, W]`` (float32 numpy) of a raw-DN image batch.

    The prediction core's array level (``oncloudn.runtime.predict_array``) with the trainer's
    own forward pass injected: its placement (device, channels-last) and autocast.
    """

    def probability(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), placement.autocast():
            logits = model(placement.image(x))
        return torch.sigmoid(cloud_logit(logits).float())

    return predict_probabilities(probability, image, placement.device, input_multiple(model))


def evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    placement: Placement,
    threshold: float,
    score_ids: set[str] | None = None,
    collect: bool = False,
    desc: str = "val",
    show: bool = True,
) -> tuple[float, float, dict[str, np.ndarray]]:
    """Pooled intersection and union of ``probability >= threshold`` (this process's chips).

    Args:
        model: The (unwrapped) model.
        loader: An ordered labelled loader.
        placement: Device, AMP and channels-last.
        threshold: Cloud probability threshold.
        score_ids: Chips counted in the metric (default: all of the loader's).
        collect: Also return ``{chip_id: float16 probability}`` of every chip.
        desc: Progress-bar label.
        show: Show the progress bar (rank 0).

    Returns:
        ``(intersection, union, probabilities)``.
    """
    model.eval()
    intersection = union = 0.0
    probabilities: dict[str, np.ndarray] = {}
    for batch in tqdm(loader, desc=desc, leave=False, disable=not show):
        proba = forward_probability(model, batch["image"], placement)
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


def write_fold_oof(
    model: nn.Module, chips: tdata.FoldChips, run: FoldRun
) -> tuple[float, float, Path]:
    """Predict the fold's held-out chips and write its OOF file (sharded under DDP).

    Returns:
        ``(intersection, union, OOF path)``, the metric summed over every process.
    """
    ctx = run.ctx
    shard = chips.oof[ctx.rank :: ctx.world_size]
    intersection = union = 0.0
    probabilities: dict[str, np.ndarray] = {}
    if shard:
        loader = tdata.eval_loader(run.source.dataset(shard, training=False), run.config)
        intersection, union, probabilities = evaluate(
            model,
            loader,
            run.placement,
            run.config.trainer.threshold,
            score_ids=set(chips.val),
            collect=True,
            desc="oof",
            show=ctx.is_main,
        )
    intersection, union = all_reduce_sum([intersection, union], ctx, run.placement.device)
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

"""A fold's model folder: the manifest of a trained network and the best epoch's save."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from oncloudn.config import TrainConfig, config_to_dict
from oncloudn.models.folder import save_model_folder
from oncloudn.runtime.manifest import Manifest
from oncloudn.training import data as tdata
from oncloudn.training.build import FoldRun
from oncloudn.training.records import BestEpoch


def fold_manifest(
    model: nn.Module, config: TrainConfig, fold: int, metrics: dict[str, Any]
) -> Manifest:
    """The fold's manifest: the one the model carries, named, with the threshold and metrics."""
    run_name = Path(config.trainer.out_dir).name or "model"
    return replace(
        model.manifest,
        name=f"{run_name}-fold{fold}",
        threshold=float(config.trainer.threshold),
        provenance={"trainer": "oncloudn.training", "fold": fold},
        metrics=dict(metrics),
    )


def save_best_folder(
    run: FoldRun,
    model: nn.Module,
    chips: tdata.FoldChips,
    best: BestEpoch,
    history: list[dict[str, Any]],
) -> Path:
    """Write the fold's model folder: ``model``'s manifest, its network's weights."""
    metrics = {
        "val_jaccard": best.score,
        "best_epoch": best.epoch,
        "fold": run.fold,
        "n_train_chips": len(chips.train),
        "n_val_chips": len(chips.val),
        **run.source.metric_notes(chips.val),
        "history": history,
    }
    return save_model_folder(
        run.dir,
        fold_manifest(model, run.config, run.fold, metrics),
        state_dict=model.network.state_dict(),
        config=config_to_dict(run.config),
        metrics=metrics,
        folds_path=run.folds_path,
        training_data={
            **run.source.describe(),
            "fold": run.fold,
            "n_train_chips": len(chips.train),
            "n_excluded": chips.excluded,
            "exclude_lists": list(run.config.data.exclude_lists),
        },
    )

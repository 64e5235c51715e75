"""Model folders built from other things: the threshold rule, ensembles of model folders."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from oncloudn.errors import ConfigError
from oncloudn.models.folder import (
    MEMBER_PREFIX,
    copy_model_folder,
    read_model_manifest,
    save_model_folder,
)
from oncloudn.runtime.models import ensemble_manifest, threshold_manifest

logger = logging.getLogger(__name__)


def make_threshold_folder(
    folder: str | os.PathLike,
    params: Mapping[str, float] | None = None,
    name: str = "threshold",
    threshold: float = 0.5,
) -> Path:
    """A model folder for the classic Sentinel-2 thresholding rule (no weights).

    Args:
        folder: Destination.
        params: Overrides of ``oncloudn.runtime.threshold.THRESHOLD_DEFAULTS``.
        name: The manifest's name.
        threshold: Cut-off on the rule's soft score.

    Raises:
        ConfigError: Unknown rule parameters.
    """
    try:
        manifest = threshold_manifest(params, name=name, threshold=float(threshold))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return save_model_folder(folder, manifest)


def make_ensemble_folder(
    folder: str | os.PathLike,
    member_dirs: Sequence[str | os.PathLike],
    weights: Sequence[float] | None = None,
    name: str = "ensemble",
    threshold: float | None = None,
) -> Path:
    """An ensemble model folder: members copied into ``member_00``, ``member_01``...

    The ensemble merges its members' cloud probabilities with the given weights (default:
    equal), then applies its own TTA views, threshold and post-processing (the runtime runs
    every member with the ensemble's views). Its ``bands`` are the union of the members'
    bands (each member reads its own). TTA views, post-processing and chip rules are taken
    from the members when they all agree (else identity / none); the threshold defaults to
    the members' mean threshold.

    Raises:
        ConfigError: No members, a weight count mismatch, or non-positive weights.
    """
    folder = Path(folder)
    if not member_dirs:
        raise ConfigError("an ensemble needs at least one member model folder")
    weights = [1.0] * len(member_dirs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(member_dirs):
        raise ConfigError(
            f"{len(weights)} ensemble weights for {len(member_dirs)} members; give one per member"
        )
    if min(weights) <= 0:
        raise ConfigError(f"ensemble weights must be positive, got {weights}")
    members, bands, manifests = [], [], []
    for index, (member_dir, weight) in enumerate(zip(member_dirs, weights, strict=True)):
        member_manifest = read_model_manifest(member_dir)
        manifests.append(member_manifest)
        sub = f"{MEMBER_PREFIX}{index:02d}"
        if (folder / sub).exists():
            shutil.rmtree(folder / sub)
        copy_model_folder(member_dir, folder / sub)
        members.append({"path": sub, "weight": weight})
        bands += [band for band in member_manifest.bands if band not in bands]
    manifest = ensemble_manifest(
        bands,
        members,
        name=name,
        threshold=float(
            np.mean([m.threshold for m in manifests]) if threshold is None else threshold
        ),
    )
    for key in ("tta", "tta_merge", "postprocess", "chip_rules"):
        values = [getattr(m, key) for m in manifests]
        if all(value == values[0] for value in values):
            setattr(manifest, key, values[0])
        else:
            logger.warning("ensemble members disagree on %s; the ensemble uses the default", key)
    return save_model_folder(folder, manifest)

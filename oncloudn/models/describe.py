"""A JSON-ready description of a model folder (for ``run.json``, reports and the CLI)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from oncloudn.models.folder import WEIGHT_SUFFIXES, model_files, read_model_manifest
from oncloudn.models.kinds import PARAMETER_COUNTERS
from oncloudn.runtime.manifest import Manifest


def count_parameters(folder: str | os.PathLike, manifest: Manifest | None = None) -> int | None:
    """Number of weight values in a model folder (members included; 0 for rules).

    A torch state dict is counted directly; other weights files by their kind's counter
    (``oncloudn.models.kinds.PARAMETER_COUNTERS``). ``None`` when a count is unknown.
    """
    folder = Path(folder)
    manifest = manifest or read_model_manifest(folder)
    total: int | None = 0
    if manifest.weights and (folder / manifest.weights).is_file():
        path = folder / manifest.weights
        if manifest.kind in PARAMETER_COUNTERS:
            total = PARAMETER_COUNTERS[manifest.kind](path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            total = sum(value.numel() for value in state.values() if torch.is_tensor(value))
    for member in manifest.members:
        count = count_parameters(folder / member["path"])
        total = None if total is None or count is None else total + count
    return total


def describe_model_folder(folder: str | os.PathLike) -> dict[str, Any]:
    """A JSON-ready summary of a model folder (for ``run.json``, reports and the CLI).

    Returns:
        name, kind, architecture, bands, normalization, tta, threshold, postprocess and
        chip_rules (non-default steps only), members, params, weights_bytes, metrics,
        git_commit.
    """
    folder = Path(folder)
    manifest = read_model_manifest(folder)
    defaults = Manifest()
    files = model_files(folder, manifest)
    summary = {
        "name": manifest.name,
        "kind": manifest.kind,
        "architecture": manifest.architecture.get("name"),
        "architecture_args": manifest.architecture.get("args", {}),
        "bands": list(manifest.bands),
        "normalization": manifest.normalization.get("name"),
        "tta": list(manifest.tta),
        "threshold": manifest.threshold,
        "postprocess": _changed(manifest.postprocess, defaults.postprocess),
        "chip_rules": _changed(manifest.chip_rules, defaults.chip_rules),
        "members": [
            {"path": m["path"], "weight": m.get("weight", 1.0), **_member_brief(folder, m)}
            for m in manifest.members
        ],
        "params": count_parameters(folder, manifest),
        "weights_bytes": sum(
            (folder / f).stat().st_size for f in files if f.suffix in WEIGHT_SUFFIXES
        ),
        "metrics": manifest.metrics,
        "git_commit": manifest.provenance.get("git_commit"),
    }
    return summary


def _member_brief(folder: Path, member: Mapping[str, Any]) -> dict[str, Any]:
    sub = read_model_manifest(folder / member["path"])
    return {"name": sub.name, "kind": sub.kind, "architecture": sub.architecture.get("name")}


def _changed(spec: Any, default: Any) -> dict[str, Any]:
    current, base = dataclasses.asdict(spec), dataclasses.asdict(default)
    return {key: value for key, value in current.items() if value != base[key]}

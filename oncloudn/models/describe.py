"""A JSON-ready description of a model folder (for ``run.json``, reports and the CLI)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oncloudn.models.folder import (
    WEIGHT_SUFFIXES,
    load_model_folder,
    manifest_path,
    model_files,
    read_model_manifest,
)
from oncloudn.models.kinds import PARAMETER_COUNTERS
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.unet import count_parameters as count_parameters_of


def count_parameters(folder: str | os.PathLike, manifest: Manifest | None = None) -> int | None:
    """Number of parameters of a model folder (members included; 0 for rules).

    A ``network`` is built and counted with the runtime's one counter
    (:func:`oncloudn.runtime.unet.count_parameters`: weights, not buffers such as batch-norm
    statistics); other weights files by their kind's counter
    (``oncloudn.models.kinds.PARAMETER_COUNTERS``). ``None`` when a count is unknown.
    """
    folder = Path(folder)
    manifest = manifest or read_model_manifest(folder)
    if manifest.members:
        counts = [
            count_parameters(folder / manifest_path(folder, m.get("path"), f"members[{i}].path"))
            for i, m in enumerate(manifest.members)
        ]
        return None if None in counts else sum(counts)
    if manifest.kind == "threshold":
        return 0
    if manifest.kind in PARAMETER_COUNTERS and manifest.weights:
        return PARAMETER_COUNTERS[manifest.kind](
            folder / manifest_path(folder, manifest.weights, "weights")
        )
    if manifest.kind == "network":
        model = load_model_folder(folder, "cpu")
        return count_parameters_of(model)
    return None


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

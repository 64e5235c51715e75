"""Model folders: the one format that training, distillation, teachers, pack and predict share.

A model folder holds::

    manifest.json   what the model is and how to run it (oncloudn.runtime.manifest.Manifest)
    weights.pt      a plain state dict of the *network* (CPU tensors, loadable by torch 1.8)
    config.yaml     the resolved training config (trained models)
    metrics.json    validation metrics (also copied into the manifest)

Ensembles keep their members in sub-folders (``member_00``, ``member_01``...) named in the
manifest's ``members``. The manifest is written last, so a folder with a manifest is complete.
Every file is written atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from oncloudn.errors import ConfigError
from oncloudn.hashing import sha256_file
from oncloudn.runtime.atomic import atomic_path, atomic_write_json, atomic_write_text
from oncloudn.runtime.manifest import (
    MANIFEST_NAME,
    WEIGHTS_NAME,
    Manifest,
    read_manifest,
    write_manifest,
)
from oncloudn.runtime.models import ensemble_manifest, threshold_manifest
from oncloudn.runtime.networks import strip_weight_prefixes

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.json"
MEMBER_PREFIX = "member_"
PROVENANCE_PACKAGES = ("torch", "numpy", "segmentation_models_pytorch", "oncloudn")
MODEL_FILES = (MANIFEST_NAME, CONFIG_NAME, METRICS_NAME)


def _plain(value: Any) -> Any:
    """A config value as plain YAML/JSON data (dataclasses, paths and tuples converted)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy / torch values
        return value.tolist()
    return value


def git_commit(repo: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}`` of the checkout holding the package, or ``{}``."""
    repo = repo or Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return {}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if commit.returncode != 0:
        return {}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def package_versions(names: Sequence[str] = PROVENANCE_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` when a package is absent)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_provenance(
    folds_path: str | os.PathLike | None = None, training_data: Any = None
) -> dict[str, Any]:
    """Provenance of a model saved now: git commit, package versions, folds hash, data."""
    provenance: dict[str, Any] = {
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "packages": package_versions(),
    }
    git = git_commit()
    if git:
        provenance["git_commit"] = git["commit"]
        provenance["git_dirty"] = git["dirty"]
    if folds_path is not None:
        if not Path(folds_path).is_file():
            raise ConfigError(f"folds file {folds_path} does not exist; pass the folds CSV used")
        provenance["folds_file"] = Path(folds_path).name
        provenance["folds_sha256"] = sha256_file(folds_path)
    if training_data is not None:
        provenance["training_data"] = _plain(training_data)
    return provenance


def _as_manifest(manifest: Manifest | Mapping[str, Any]) -> Manifest:
    if isinstance(manifest, Manifest):
        return dataclasses.replace(manifest)
    try:
        return Manifest.from_dict(dict(manifest))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid manifest: {error}") from None


def _cpu_state_dict(state_dict: Mapping[str, Any] | torch.nn.Module) -> dict[str, Any]:
    if isinstance(state_dict, torch.nn.Module):
        state_dict = state_dict.state_dict()
    # Without DistributedDataParallel / torch.compile / wrapper prefixes: the network's keys.
    # clone(): a view would otherwise save its whole underlying storage.
    return {
        key: value.detach().cpu().clone() if torch.is_tensor(value) else value
        for key, value in strip_weight_prefixes(state_dict).items()
    }


def save_weights(path: Path, state_dict: Mapping[str, Any] | torch.nn.Module) -> Path:
    """Save a network state dict (CPU tensors, zip format read by torch 1.6+) atomically."""
    plain = _cpu_state_dict(state_dict)
    with atomic_path(path) as temp, open(temp, "wb") as stream:
        torch.save(plain, stream)
    return Path(path)


def save_model_folder(
    folder: str | os.PathLike,
    manifest: Manifest | Mapping[str, Any],
    state_dict: Mapping[str, Any] | torch.nn.Module | None = None,
    config: Any = None,
    metrics: Mapping[str, Any] | None = None,
    folds_path: str | os.PathLike | None = None,
    training_data: Any = None,
) -> Path:
    """Write a model folder: weights, config, metrics, then the manifest (with provenance).

    Args:
        folder: Destination (created; existing files of the same names are replaced).
        manifest: A :class:`Manifest` or its dict form.
        state_dict: The network's state dict (or the module itself); required for a
            ``network`` manifest unless its weights file is already in the folder.
        config: The resolved training config (dict or dataclass) written as ``config.yaml``.
        metrics: Validation metrics, written as ``metrics.json`` and into the manifest.
        folds_path: The folds CSV used for training; its SHA-256 goes in the provenance.
        training_data: A description of the training data (dataset root, chip count...).

    Returns:
        The folder's path.

    Raises:
        ConfigError: An invalid manifest, a network without weights, or a missing folds file.
    """
    folder = Path(folder)
    manifest = _as_manifest(manifest)
    if state_dict is not None:
        manifest.weights = manifest.weights or WEIGHTS_NAME
    weights_path = folder / manifest.weights if manifest.weights else None
    has_weights = weights_path is not None and weights_path.is_file()
    if manifest.kind == "network" and state_dict is None and not has_weights:
        raise ConfigError(
            f"model folder {folder}: a 'network' manifest needs weights; pass state_dict= "
            f"(or put {manifest.weights or WEIGHTS_NAME} in the folder first)"
        )
    provenance = build_provenance(folds_path, training_data)
    manifest.provenance = {**manifest.provenance, **provenance}
    folder.mkdir(parents=True, exist_ok=True)
    if state_dict is not None and weights_path is not None:
        save_weights(weights_path, state_dict)
    if config is not None:
        text = yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False)
        atomic_write_text(folder / CONFIG_NAME, text)
    if metrics is not None:
        manifest.metrics = _plain(dict(metrics))
        atomic_write_json(folder / METRICS_NAME, manifest.metrics)
    write_manifest(str(folder), manifest)
    logger.info("saved model folder %s (%s, %s)", folder, manifest.kind, manifest.name)
    return folder


def read_model_manifest(folder: str | os.PathLike) -> Manifest:
    """Read a folder's manifest, raising :class:`ConfigError` for an invalid one.

    Raises:
        FileNotFoundError: The folder has no ``manifest.json``.
        ConfigError: The manifest does not parse.
    """
    try:
        return read_manifest(str(folder))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def load_model_folder(folder: str | os.PathLike, device: str | torch.device = "cpu") -> Any:
    """Load a model folder for prediction (the runtime's loader: one implementation).

    Returns:
        The runtime model: ``.manifest`` and ``predict_proba(raw [N, C, H, W]) -> [N, H, W]``.
    """
    from oncloudn.models.kinds import register_library_kinds
    from oncloudn.runtime.loader import load_model

    register_library_kinds()
    read_model_manifest(folder)  # a clear error for a missing or invalid manifest
    return load_model(str(folder), device)


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


def model_files(folder: Path, manifest: Manifest | None = None) -> list[Path]:
    """The files that make up a model folder (relative paths), members included.

    Only the manifest, its weights, ``config.yaml`` and ``metrics.json`` count: logs and
    training checkpoints lying beside them are not part of the model.
    """
    folder = Path(folder)
    manifest = manifest or read_model_manifest(folder)
    names = [Path(name) for name in MODEL_FILES if (folder / name).is_file()]
    if manifest.weights:
        if not (folder / manifest.weights).is_file():
            raise ConfigError(
                f"model folder {folder}: weights file {manifest.weights} named in the manifest "
                "is missing"
            )
        names.append(Path(manifest.weights))
    for member in manifest.members:
        member_dir = folder / member["path"]
        names += [Path(member["path"]) / name for name in model_files(member_dir)]
    return names


def copy_model_folder(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Copy a model folder's files (see :func:`model_files`) into ``destination``."""
    source, destination = Path(source), Path(destination)
    for relative in model_files(source):
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, target)
    return destination


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


def count_parameters(folder: str | os.PathLike, manifest: Manifest | None = None) -> int:
    """Number of weight values in a model folder (members included; 0 for rules)."""
    folder = Path(folder)
    manifest = manifest or read_model_manifest(folder)
    total = 0
    if manifest.weights and (folder / manifest.weights).is_file():
        state = torch.load(folder / manifest.weights, map_location="cpu", weights_only=True)
        total += sum(value.numel() for value in state.values() if torch.is_tensor(value))
    for member in manifest.members:
        total += count_parameters(folder / member["path"])
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
            (folder / f).stat().st_size for f in files if f.suffix in (".pt", ".pth")
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

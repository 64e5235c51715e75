"""Model folders: the one format that training, distillation, teachers, pack and predict share.

A model folder holds::

    manifest.json   what the model is and how to run it (oncloudn.runtime.manifest.Manifest)
    weights.pt      a plain state dict of the *network* (CPU tensors, loadable by torch 1.8)
    config.yaml     the resolved training config (trained models)
    metrics.json    validation metrics (also copied into the manifest)

Builders (threshold rule, ensembles) live in ``builders.py``, provenance in ``provenance.py``,
descriptions in ``describe.py``. Ensembles keep their members in sub-folders (``member_00``,
``member_01``...) named in the manifest's ``members``. The manifest is written last, so a
folder with a manifest is complete. Every file is written atomically (temporary file +
``os.replace``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from oncloudn.errors import ConfigError
from oncloudn.models.kinds import kind_files, register_library_kinds
from oncloudn.models.provenance import build_provenance, plain_data
from oncloudn.runtime.atomic import atomic_path, atomic_write_json, atomic_write_text
from oncloudn.runtime.loader import load_model
from oncloudn.runtime.manifest import (
    MANIFEST_NAME,
    WEIGHTS_NAME,
    Manifest,
    path_inside,
    read_manifest,
    write_manifest,
)
from oncloudn.runtime.networks import strip_weight_prefixes

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.json"
MEMBER_PREFIX = "member_"
MODEL_FILES = (MANIFEST_NAME, CONFIG_NAME, METRICS_NAME)
WEIGHT_SUFFIXES = (".pt", ".pth", ".onnx")


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
        text = yaml.safe_dump(plain_data(config), sort_keys=False, default_flow_style=False)
        atomic_write_text(folder / CONFIG_NAME, text)
    if metrics is not None:
        manifest.metrics = plain_data(dict(metrics))
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

    The library's kinds (``oncloudn.models.kinds``, e.g. ``onnx``) are registered first.

    Returns:
        The runtime model: ``.manifest`` and ``predict_proba(raw [N, C, H, W]) -> [N, H, W]``.

    Raises:
        FileNotFoundError: No manifest or weights.
        ConfigError: An invalid manifest, an unknown kind or weights that do not fit.
    """
    read_model_manifest(folder)  # a clear error for a missing or invalid manifest
    register_library_kinds()
    try:
        return load_model(str(folder), device)
    except ValueError as error:  # an unknown kind, bad options, weights that do not fit
        raise ConfigError(str(error)) from None


def manifest_path(folder: str | os.PathLike, name: Any, field_name: str) -> Path:
    """``name``, a path the manifest of ``folder`` names, checked to lie inside the folder.

    Symbolic links are resolved, so a link out of the folder is refused like ``../x``.

    Returns:
        The path relative to the folder, as the manifest names it.

    Raises:
        ConfigError: An absolute path, or one that resolves outside the folder; the message
            names the manifest field.
    """
    try:
        path_inside(str(folder), name, field_name)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return Path(name)


def check_model_paths(folder: str | os.PathLike, manifest: Manifest | None = None) -> None:
    """Check that every path a model folder's manifest names lies inside it, members included.

    Weights, the files its kind declares and member folders are checked before any of them
    is read (a missing file is left to the loader to report).

    Raises:
        ConfigError: A path that leaves its folder; the message names the field.
    """
    folder = Path(folder)
    manifest = manifest or read_model_manifest(folder)
    if manifest.weights:
        manifest_path(folder, manifest.weights, "weights")
    for name in kind_files(folder, manifest.kind, manifest.options):
        manifest_path(folder, str(name), f"{manifest.kind} file {name}")
    for index, member in enumerate(manifest.members):
        relative = manifest_path(folder, member.get("path"), f"members[{index}].path")
        if (folder / relative / MANIFEST_NAME).is_file():
            check_model_paths(folder / relative)


def model_files(folder: Path, manifest: Manifest | None = None) -> list[Path]:
    """The files that make up a model folder (relative paths), members included.

    Only the manifest, its weights, ``config.yaml``, ``metrics.json`` and the files its kind
    declares (``oncloudn.models.kinds.EXTRA_MODEL_FILES``, e.g. a copied nnU-Net trained model)
    count: logs and training checkpoints lying beside them are not part of the model. Every
    path must resolve inside its folder (symbolic links too), so copying and ``pack`` never
    read or write outside it.

    Raises:
        FileNotFoundError: A member folder without a manifest.
        ConfigError: A path that leaves its folder (the message names the field), or a
            missing weights file.
    """
    folder = Path(folder)
    manifest = manifest or read_model_manifest(folder)
    names = [manifest_path(folder, name, name) for name in MODEL_FILES if (folder / name).is_file()]
    if manifest.weights:
        weights = manifest_path(folder, manifest.weights, "weights")
        if not (folder / weights).is_file():
            raise ConfigError(
                f"model folder {folder}: weights file {manifest.weights} named in the manifest "
                "is missing"
            )
        names.append(weights)
    for name in kind_files(folder, manifest.kind, manifest.options):
        if name not in names:
            names.append(manifest_path(folder, str(name), f"{manifest.kind} file {name}"))
    for index, member in enumerate(manifest.members):
        relative = manifest_path(folder, member.get("path"), f"members[{index}].path")
        names += [relative / name for name in model_files(folder / relative)]
    return names


def copy_model_folder(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Copy a model folder's files (see :func:`model_files`) into ``destination``."""
    source, destination = Path(source), Path(destination)
    for relative in model_files(source):
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, target)
    return destination

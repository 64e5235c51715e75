"""Read an nnU-Net v2 trained-model folder without nnunetv2: plans, labels, checkpoints, network.

A trained-model folder (``nnUNet_results/DatasetNNN_Name/<trainer>__<plans>__2d``) holds
``plans.json``, ``dataset.json`` and ``fold_X/checkpoint_final.pth``. The network is rebuilt
from the plans' ``architecture`` (``network_class_name``, ``arch_kwargs`` and the kwargs named
in ``_kw_requires_import``), as nnU-Net's ``get_network_from_plans`` does, but only classes
of :data:`ALLOWED_CLASSES` are imported: a plans file naming anything else is refused, since
importing a name from a file is running code the file chose.

Checkpoints are pickles. They are read with ``torch.load(weights_only=True)``, allowing only
numpy scalars and dtypes besides tensors (nnU-Net stores its EMA Dice as a numpy float);
a checkpoint that needs more is refused. Even so, load checkpoints you trust.

Only what nnU-Net's 2d natural-image pipeline needs is supported: a 2-D configuration at
spacing 1 (no resampling), identity transposes, per-channel ``ZScoreNormalization`` and
softmax labels (not regions).
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from oncloudn.errors import ConfigError

NETWORK_CLASSES = (
    "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
)
LAYER_CLASSES = (
    "torch.nn.Conv2d",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.InstanceNorm2d",
    "torch.nn.modules.instancenorm.InstanceNorm2d",
    "torch.nn.BatchNorm2d",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.Dropout2d",
    "torch.nn.modules.dropout.Dropout2d",
    "torch.nn.LeakyReLU",
    "torch.nn.modules.activation.LeakyReLU",
    "torch.nn.ReLU",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.GELU",
    "torch.nn.modules.activation.GELU",
)
ALLOWED_CLASSES = NETWORK_CLASSES + LAYER_CLASSES
"""Dotted names a plans file may make us import (nothing else is ever imported)."""

SUPPORTED_NORMALIZATION = ("ZScoreNormalization",)
CHECKPOINT_NAME = "checkpoint_final.pth"


@dataclass
class TrainedModel:
    """An nnU-Net v2 trained-model folder, read.

    Attributes:
        folder: The trained-model folder.
        plans: ``plans.json``.
        dataset_json: ``dataset.json``.
        configuration: The configuration's name (from the first checkpoint, e.g. ``2d``).
        config: The configuration's resolved plans entry.
        states: One network state dict per fold, in the order of ``folds``.
        folds: The folds read.
        mirror_axes: ``inference_allowed_mirroring_axes`` of the first checkpoint.
    """

    folder: Path
    plans: dict[str, Any]
    dataset_json: dict[str, Any]
    configuration: str
    config: dict[str, Any]
    states: list[dict[str, torch.Tensor]] = field(default_factory=list)
    folds: list[str] = field(default_factory=list)
    mirror_axes: tuple[int, ...] | None = None


def locate_allowed(name: str, source: str) -> type:
    """The class ``name`` if it is in :data:`ALLOWED_CLASSES`.

    Raises:
        ConfigError: ``name`` is not allowed (the message lists what is).
    """
    if name not in ALLOWED_CLASSES:
        raise ConfigError(
            f"{source}: refusing to import {name!r}: an nnU-Net plans file may only name "
            f"{', '.join(ALLOWED_CLASSES)} (see oncloudn.models.nnunet_network.ALLOWED_CLASSES)"
        )
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; give an nnU-Net v2 trained-model folder (plans.json, "
            "dataset.json, fold_X/checkpoint_final.pth)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def resolve_configuration(plans: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    """The plans entry of configuration ``name``, with ``inherits_from`` resolved.

    Raises:
        ConfigError: An unknown configuration, or one this reader does not support.
    """
    configurations = plans.get("configurations", {})
    if name not in configurations:
        raise ConfigError(
            f"{source}: no configuration {name!r}; it has {', '.join(sorted(configurations))}"
        )
    config = dict(configurations[name])
    parent = config.pop("inherits_from", None)
    if parent is not None:
        config = {**resolve_configuration(plans, parent, source), **config}
    return config


def check_supported(trained: TrainedModel) -> None:
    """Refuse what the teacher cannot reproduce faithfully (the message names the field).

    Raises:
        ConfigError: Not a 2-D configuration at spacing 1 with identity transposes,
            normalization other than ZScore, regions, or a cascade.
    """
    config, source = trained.config, str(trained.folder / "plans.json")
    problems = []
    if len(config.get("patch_size", [])) != 2:
        problems.append(f"patch_size {config.get('patch_size')} is not 2-D (use a 2d model)")
    if [float(s) for s in config.get("spacing", [])] != [1.0, 1.0]:
        problems.append(f"spacing {config.get('spacing')} needs resampling (natural images: 1, 1)")
    for key in ("transpose_forward", "transpose_backward"):
        if list(trained.plans.get(key, [0, 1, 2])) != [0, 1, 2]:
            problems.append(f"{key} {trained.plans.get(key)} is not the identity")
    unknown = sorted(set(config.get("normalization_schemes", [])) - set(SUPPORTED_NORMALIZATION))
    if unknown:
        supported = ", ".join(SUPPORTED_NORMALIZATION)
        problems.append(f"normalization {unknown} (supported: {supported})")
    if config.get("previous_stage"):
        problems.append("a cascade stage (previous_stage) needs another model's output")
    if any(isinstance(v, list | tuple) for v in trained.dataset_json.get("labels", {}).values()):
        problems.append("region-based labels (sigmoid outputs)")
    if problems:
        raise ConfigError(f"{source}: unsupported nnU-Net model: " + "; ".join(problems))


def segmentation_labels(dataset_json: dict[str, Any]) -> dict[str, int]:
    """Label name -> output channel (the ignore label has no channel)."""
    labels = {name: int(value) for name, value in dataset_json.get("labels", {}).items()}
    labels.pop("ignore", None)
    return labels


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read an nnU-Net checkpoint with ``weights_only=True`` (numpy scalars allowed).

    Raises:
        FileNotFoundError: No such file.
        ConfigError: It needs more than tensors, containers and numpy scalars to unpickle.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} is missing; train that fold or drop it")
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    dtypes = [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64)]
    try:
        with torch.serialization.safe_globals([scalar, np.dtype, *dtypes]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError or RuntimeError here
        raise ConfigError(
            f"checkpoint {path} holds objects beyond tensors and numpy scalars, refused "
            f"(weights_only load: {str(error).splitlines()[0]})"
        ) from None


def read_trained_model(
    folder: str | os.PathLike, folds: list[str], checkpoint: str = CHECKPOINT_NAME
) -> TrainedModel:
    """Read plans, dataset.json and the folds' checkpoints of a trained-model folder.

    Args:
        folder: The trained-model folder.
        folds: Fold names (``"0"``, ``"1"``... or ``"all"``).
        checkpoint: The checkpoint file in each ``fold_X``.

    Raises:
        FileNotFoundError: A missing file.
        ConfigError: No folds, an unsupported model, or checkpoints of different
            configurations.
    """
    folder = Path(folder)
    if not folds:
        raise ConfigError(f"{folder}: give at least one fold (e.g. --folds 0)")
    plans = _read_json(folder / "plans.json")
    dataset_json = _read_json(folder / "dataset.json")
    states, configuration, mirror_axes = [], None, None
    for fold in folds:
        data = load_checkpoint(folder / f"fold_{fold}" / checkpoint)
        name = data.get("init_args", {}).get("configuration")
        if configuration is None:
            configuration = name
            axes = data.get("inference_allowed_mirroring_axes")
            mirror_axes = None if axes is None else tuple(int(axis) for axis in axes)
        elif name != configuration:
            raise ConfigError(
                f"{folder}: fold {fold} is configuration {name!r}, not {configuration!r}"
            )
        states.append(data["network_weights"])
    config = resolve_configuration(plans, configuration or "2d", str(folder / "plans.json"))
    trained = TrainedModel(
        folder, plans, dataset_json, configuration, config, states, list(folds), mirror_axes
    )
    check_supported(trained)
    return trained


def build_network(trained: TrainedModel) -> nn.Module:
    """The inference network (no deep supervision) the plans describe, allowlist enforced.

    Raises:
        ConfigError: A class outside :data:`ALLOWED_CLASSES`, or no ``architecture``.
    """
    source = str(trained.folder / "plans.json")
    architecture = trained.config.get("architecture")
    if not architecture or "network_class_name" not in architecture:
        raise ConfigError(
            f"{source}: configuration {trained.configuration!r} has no architecture "
            "(plans from nnU-Net before 2.4 are not supported; re-plan with nnunetv2 >= 2.4)"
        )
    network_class = locate_allowed(architecture["network_class_name"], source)
    kwargs = dict(architecture.get("arch_kwargs", {}))
    for key in architecture.get("_kw_requires_import", []):
        if kwargs.get(key) is not None:
            kwargs[key] = locate_allowed(kwargs[key], source)
    kwargs["deep_supervision"] = False
    return network_class(
        input_channels=len(trained.dataset_json["channel_names"]),
        num_classes=len(segmentation_labels(trained.dataset_json)),
        **kwargs,
    )

"""``oncloudn models compare``: size, cost, speed and agreement of model folders.

For each model folder: trainable parameters (``torch`` parameters of its networks; the
weight count of an ONNX graph), size on disk, FLOPs per 512 x 512 chip (counted with
``torch.utils.flop_counter`` on the networks' forward pass, TTA views multiplying it; not
counted for non-torch kinds), CPU chips/s over a features folder through the prediction
core (reading, TTA and post-processing included), and the pairwise agreement of their masks
(the competition's pooled Jaccard of one model's masks against another's).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from oncloudn.errors import ConfigError
from oncloudn.models.describe import count_parameters
from oncloudn.models.folder import load_model_folder, model_files
from oncloudn.runtime.bands import CHIP_SIZE
from oncloudn.runtime.chipio import list_chip_ids
from oncloudn.runtime.predict import predict_chips
from oncloudn.runtime.tta import resolve_views
from oncloudn.runtime.unet import count_parameters as count_module_parameters

logger = logging.getLogger(__name__)


@dataclass
class ModelFigures:
    """What ``compare_models`` measured for one model folder.

    Attributes:
        name: The folder's name (its path as given).
        kind: The manifest's kind.
        params: Trainable parameters (``None`` when unknown).
        size_bytes: Bytes of the folder's model files.
        gflops_per_chip: Giga floating-point operations per 512 x 512 chip with its TTA
            (``None`` for non-torch kinds).
        chips_per_s: Chips per second over the data (``None`` without data).
        tta_views: The TTA views it ran with.
    """

    name: str
    kind: str
    params: int | None
    size_bytes: int
    gflops_per_chip: float | None
    chips_per_s: float | None = None
    tta_views: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    """Figures per model and the pairwise agreement matrix (``agreement[i][j]``)."""

    models: list[ModelFigures]
    agreement: list[list[float]] | None
    n_chips: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "models": [asdict(m) for m in self.models],
            "agreement": self.agreement,
            "n_chips": self.n_chips,
        }


def trainable_parameters(model: Any, folder: Path) -> int | None:
    """Parameters of a loaded model (members included; not buffers); the file count otherwise."""
    modules = _torch_modules(model)
    if modules:
        return sum(count_module_parameters(m) for m in modules)
    return count_parameters(folder)


def _torch_modules(model: Any) -> list[torch.nn.Module]:
    members = getattr(model, "members", None)
    if members:
        return [m for member in members for m in _torch_modules(member)]
    return [model] if isinstance(model, torch.nn.Module) else []


def flops_per_chip(model: Any, size: int = CHIP_SIZE) -> float | None:
    """FLOPs of one ``size x size`` chip through the model's networks with its TTA views."""
    if not _torch_modules(model) or _has_non_torch_member(model):
        return None
    views = len(resolve_views(model.manifest.tta))
    raw = torch.full((1, len(model.bands), size, size), 1000.0)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.logits(raw)
    return float(counter.get_total_flops()) * views


def _has_non_torch_member(model: Any) -> bool:
    members = getattr(model, "members", None)
    if members:
        return any(_has_non_torch_member(member) for member in members)
    return not isinstance(model, torch.nn.Module) and model.manifest.kind != "threshold"


def folder_size(folder: Path) -> int:
    """Bytes of a model folder's model files (manifest, weights, config, metrics)."""
    return sum((folder / name).stat().st_size for name in model_files(folder))


def _predict_masks(model: Any, features_dir: str, chip_ids: list[str], batch_size: int):
    masks: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    predict_chips(
        model,
        features_dir,
        None,
        chip_ids=chip_ids,
        batch_size=batch_size,
        sink=lambda chip_id, _probability, mask: masks.__setitem__(chip_id, mask.astype(bool)),
    )
    return masks, len(chip_ids) / max(time.perf_counter() - start, 1e-9)


def mask_agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Pooled Jaccard of two models' masks over their common chips (1.0 when both are empty)."""
    intersection = union = 0
    for chip_id in sorted(set(a) & set(b)):
        intersection += int(np.logical_and(a[chip_id], b[chip_id]).sum())
        union += int(np.logical_or(a[chip_id], b[chip_id]).sum())
    return intersection / union if union else 1.0


def compare_models(
    model_dirs: Sequence[str | os.PathLike],
    features_dir: str | os.PathLike | None = None,
    max_chips: int | None = None,
    batch_size: int = 4,
) -> Comparison:
    """Measure model folders side by side (see the module docstring).

    Args:
        model_dirs: Model folders (any kind).
        features_dir: A features folder to time the models on and compare their masks
            (``None``: sizes and FLOPs only).
        max_chips: Use the first this many chips (sorted ids).
        batch_size: Chips per forward pass.

    Raises:
        ConfigError: No model folder, or a features folder without chips.
    """
    if not model_dirs:
        raise ConfigError("models compare needs at least one model folder")
    chip_ids: list[str] = []
    if features_dir is not None:
        chip_ids = list_chip_ids(str(features_dir))[: max_chips or None]
        if not chip_ids:
            raise ConfigError(f"{features_dir} holds no chip folders; pass a features folder")
    figures, masks = [], []
    for model_dir in model_dirs:
        folder = Path(model_dir)
        model = load_model_folder(folder, "cpu")
        row = ModelFigures(
            name=str(model_dir),
            kind=model.manifest.kind,
            params=trainable_parameters(model, folder),
            size_bytes=folder_size(folder),
            gflops_per_chip=_giga(flops_per_chip(model)),
            tta_views=resolve_views(model.manifest.tta),
        )
        if chip_ids:
            chip_masks, row.chips_per_s = _predict_masks(
                model, str(features_dir), chip_ids, batch_size
            )
            masks.append(chip_masks)
        figures.append(row)
        logger.info("measured %s", row)
    agreement = None
    if masks:
        agreement = [[round(mask_agreement(a, b), 4) for b in masks] for a in masks]
    return Comparison(figures, agreement, len(chip_ids))


def _giga(flops: float | None) -> float | None:
    return None if flops is None else round(flops / 1e9, 3)


def format_comparison(comparison: Comparison) -> str:
    """A plain-text table of the figures, then the agreement matrix."""
    lines = [
        f"{'#':>2}  {'model':<32} {'kind':<9} {'params':>11} {'MB':>7} {'GFLOPs/chip':>11} "
        f"{'chips/s':>8}  TTA"
    ]
    for index, m in enumerate(comparison.models):
        params = f"{m.params:,}" if m.params is not None else "?"
        gflops = f"{m.gflops_per_chip:.2f}" if m.gflops_per_chip is not None else "-"
        speed = f"{m.chips_per_s:.2f}" if m.chips_per_s is not None else "-"
        lines.append(
            f"{index:>2}  {m.name[-32:]:<32} {m.kind:<9} {params:>11} "
            f"{m.size_bytes / 1e6:>7.2f} {gflops:>11} {speed:>8}  {len(m.tta_views)} views"
        )
    if comparison.agreement is not None:
        lines.append(f"agreement (pooled Jaccard of masks, {comparison.n_chips} chips):")
        lines.append("    " + " ".join(f"{j:>7}" for j in range(len(comparison.models))))
        for i, row in enumerate(comparison.agreement):
            lines.append(f"{i:>2}  " + " ".join(f"{value:>7.4f}" for value in row))
    return "\n".join(lines)

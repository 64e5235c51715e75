"""The library predictor: a model folder over a features folder, batched, on CPU or GPU.

A thin driver of the runtime's folder-level core (``oncloudn.runtime.predict.predict_chips``),
so a mask written here equals the one ``submission/main.py`` writes for the same model, and
unreadable chips get the same georeferenced fallback. What it adds: automatic CUDA with
float16 autocast (AMP) injected as the forward pass's context, a TTA override, a progress
bar, probabilities instead of masks, and no 512 x 512 rule (any chip size the network
accepts; ``main.py`` alone insists on 512). Like ``main.py`` it runs torch networks on the
fast path (``oncloudn/runtime/fast.py``) unless ``fast="off"``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm

from oncloudn.errors import ConfigError, DataError
from oncloudn.models.folder import load_model_folder
from oncloudn.runtime.chipio import list_chip_ids
from oncloudn.runtime.fast import FAST_LAYOUTS, accelerate_model
from oncloudn.runtime.predict import predict_chips
from oncloudn.runtime.tta import resolve_views

logger = logging.getLogger(__name__)


def resolve_device(device: str | None = None) -> str:
    """``device``, or ``cuda`` when available, else ``cpu``.

    Raises:
        ConfigError: CUDA is asked for but not available.
    """
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} asked for, but CUDA is not available; use --device cpu"
        )
    return device


def parse_tta(tta: str | Sequence[str] | None) -> list[str] | None:
    """TTA override: a preset (``none``, ``flips``, ``d4``...) or comma-separated view names.

    Raises:
        ConfigError: An unknown preset or view.
    """
    if tta is None:
        return None
    if isinstance(tta, str) and "," in tta:
        tta = [view.strip() for view in tta.split(",") if view.strip()]
    try:
        return resolve_views(tta)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_fast_layout(layout: str) -> str:
    """``layout`` when it is one of the fast path's layouts.

    Raises:
        ConfigError: An unknown layout (the message lists the valid ones).
    """
    if layout not in FAST_LAYOUTS:
        raise ConfigError(
            f"unknown fast layout {layout!r}; choose one of: {', '.join(FAST_LAYOUTS)}"
        )
    return layout


def autocast_context(device: str, amp: bool):
    """A context factory for CUDA float16 autocast, or ``None`` (CPU, or AMP off)."""
    if not (amp and device.startswith("cuda")):
        return None
    return lambda: torch.autocast("cuda", dtype=torch.float16)


def _check_features_folder(features_dir: str, chip_ids: list[str]) -> None:
    nested = [name for name in chip_ids if name.endswith(("_features", "_labels"))]
    if nested:
        raise DataError(
            f"{features_dir} looks like a dataset root (it holds {nested[0]}/); pass the "
            f"features folder itself, e.g. {os.path.join(features_dir, nested[0])}"
        )


def predict_folder(
    model_dir: str | os.PathLike,
    features_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    probabilities: bool = False,
    batch_size: int = 8,
    num_workers: int = 2,
    device: str | None = None,
    amp: bool = True,
    tta: str | Sequence[str] | None = None,
    chip_ids: Sequence[str] | None = None,
    progress: bool = True,
    fast: str = "auto",
) -> dict[str, Any]:
    """Predict every chip of ``features_dir`` with a model folder.

    Args:
        model_dir: A model folder (``manifest.json`` + weights).
        features_dir: ``<root>/<split>_features`` (one folder per chip).
        out_dir: Output folder: ``<chip_id>.tif`` per chip, uint8 0/1 masks (or float32 cloud
            probabilities with ``probabilities``), georeferenced like the input.
        probabilities: Write probabilities instead of masks (before threshold and
            post-processing; fallback chips get their 0/1 mask as float).
        batch_size: Chips per forward pass.
        num_workers: Threads reading the next batch while one is predicted (0: none).
        device: ``cuda``, ``cuda:1``, ``cpu``...; default CUDA when available.
        amp: Use float16 autocast on CUDA (ignored on CPU).
        tta: Override the manifest's TTA views (preset or view names).
        chip_ids: Chips to predict (default: every non-hidden folder).
        progress: Show a progress bar.
        fast: Fast-path layout for torch networks (``oncloudn/runtime/fast.py``; ``auto``:
            the fastest for the device, checked against the plain network; ``off``: none).

    Returns:
        Summary: n_chips, n_written, n_fallback, n_all_nodata, failed (chip -> reason),
        wall_s, chips_per_s, device, tta_views, out_dir, output, fast_layout.

    Raises:
        FileNotFoundError: No such features folder or model folder.
        ConfigError: Bad device, TTA or batch size.
    """
    if batch_size < 1 or num_workers < 0:
        raise ConfigError(
            f"batch size must be >= 1 and workers >= 0, got {batch_size}, {num_workers}"
        )
    device = resolve_device(device)
    views = parse_tta(tta)
    check_fast_layout(fast)
    features_dir = str(features_dir)
    chip_ids = list_chip_ids(features_dir) if chip_ids is None else list(chip_ids)
    _check_features_folder(features_dir, chip_ids)
    model = load_model_folder(model_dir, device)
    views = views or resolve_views(model.manifest.tta)
    model, fast_layout = accelerate_model(model, device, fast)
    bar = tqdm(total=len(chip_ids), desc="predict", unit="chip", disable=not progress)
    with bar:
        summary = predict_chips(
            model,
            features_dir,
            str(out_dir),
            chip_ids=chip_ids,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
            views=views,
            context=autocast_context(device, amp),
            write_masks=not probabilities,
            write_probabilities=probabilities,
            probabilities_dir=str(out_dir) if probabilities else None,
            progress=bar.update,
        )
    summary.update(out_dir=str(out_dir), output="probabilities" if probabilities else "masks")
    summary["fast_layout"] = fast_layout
    return summary

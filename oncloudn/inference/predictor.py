"""The library predictor: a model folder over a features folder, batched, on CPU or GPU.

It reuses the runtime's pieces (``load_model``, ``predict_batch`` with its TTA,
``finalize_mask``, ``fallback_mask``, ``chipio.write_mask``/``write_probability``), so a mask
written here equals the one ``submission/main.py`` writes for the same model. What it adds:
a torch ``DataLoader`` whose workers read chips in parallel, automatic CUDA with autocast
(AMP), a TTA override, a progress bar and float32 probability output.

A chip that cannot be read gets the runtime's fallback mask (the threshold rule on the bands
that can be read); a chip that is all nodata gets zeros.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from oncloudn.errors import ConfigError, DataError
from oncloudn.runtime.chipio import (
    CHIP_SIZE,
    list_chip_ids,
    nodata_mask,
    read_bands,
    write_mask,
    write_probability,
)
from oncloudn.runtime.predict import fallback_mask, finalize_mask, predict_batch
from oncloudn.runtime.tta import resolve_views

logger = logging.getLogger(__name__)


@dataclass
class ChipItem:
    """One chip as read by :class:`ChipReader`.

    Attributes:
        chip_id: The chip's folder name.
        raw: Raw DN ``[C, H, W]`` (uint16), or ``None`` when it could not be read.
        profile: ``{"crs", "transform"}`` of its first band (``{}`` when unreadable).
        error: Why it could not be read (``None`` when it was).
    """

    chip_id: str
    raw: np.ndarray | None
    profile: dict
    error: str | None = None


class ChipReader(Dataset):
    """Reads the chosen bands of each chip (a torch ``Dataset``, so workers read in parallel).

    Args:
        features_dir: ``<root>/<split>_features``.
        chip_ids: Chips to read.
        bands: Band names in the model's channel order.
    """

    def __init__(self, features_dir: str | os.PathLike, chip_ids: Sequence[str], bands):
        self.features_dir = str(features_dir)
        self.chip_ids = list(chip_ids)
        self.bands = list(bands)

    def __len__(self) -> int:
        return len(self.chip_ids)

    def __getitem__(self, index: int) -> ChipItem:
        chip_id = self.chip_ids[index]
        chip_dir = os.path.join(self.features_dir, chip_id)
        try:
            raw, profile = read_bands(chip_dir, self.bands, with_profile=True)
        except Exception as error:  # one bad chip gets the fallback, never stops the run
            return ChipItem(chip_id, None, {}, f"{type(error).__name__}: {error}")
        if raw.shape[-2:] != (CHIP_SIZE, CHIP_SIZE):
            problem = f"bands have shape {raw.shape[-2:]}, expected ({CHIP_SIZE}, {CHIP_SIZE})"
            return ChipItem(chip_id, None, profile, problem)
        return ChipItem(chip_id, raw, profile)


def _keep_list(items: list[ChipItem]) -> list[ChipItem]:
    return items


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


class _Writer:
    """Writes masks (or probabilities) and keeps the run's counts."""

    def __init__(self, out_dir: Path, features_dir: str, bands, probabilities: bool):
        self.out_dir = out_dir
        self.features_dir = features_dir
        self.bands = bands
        self.probabilities = probabilities
        self.n_written = 0
        self.n_all_nodata = 0
        self.failed: dict[str, str] = {}

    def write(self, item: ChipItem, probability: np.ndarray | None, mask: np.ndarray) -> None:
        path = str(self.out_dir / f"{item.chip_id}.tif")
        crs, transform = item.profile.get("crs"), item.profile.get("transform")
        if self.probabilities:
            values = mask.astype(np.float32) if probability is None else probability
            write_probability(path, values, crs=crs, transform=transform)
        else:
            write_mask(path, mask, crs=crs, transform=transform)
        self.n_written += 1

    def fallback(self, item: ChipItem, reason: str) -> None:
        logger.warning("chip %s: %s; writing the fallback mask", item.chip_id, reason)
        self.failed[item.chip_id] = reason
        mask = fallback_mask(os.path.join(self.features_dir, item.chip_id))
        self.write(item, None, mask)


def _predict(model, raws: np.ndarray, device: str, views, amp: bool) -> np.ndarray:
    use_amp = amp and device.startswith("cuda")
    context = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
    with context:
        return predict_batch(model, raws, device, views)


def _process(model, items: list[ChipItem], writer: _Writer, device, views, amp) -> None:
    ready = []
    for item in items:
        if item.raw is None:
            writer.fallback(item, item.error or "unreadable")
            continue
        nodata = nodata_mask(item.raw)
        if nodata.all():
            writer.n_all_nodata += 1
            writer.write(item, np.zeros(nodata.shape, np.float32), np.zeros(nodata.shape, np.uint8))
            continue
        ready.append((item, nodata))
    if not ready:
        return
    try:
        probabilities = list(
            _predict(model, np.stack([i.raw for i, _ in ready]), device, views, amp)
        )
    except Exception as error:  # retry chip by chip so one chip cannot sink the batch
        logger.warning("batch of %d failed (%s); retrying chip by chip", len(ready), error)
        probabilities = []
        for item, _ in ready:
            try:
                probabilities.append(_predict(model, item.raw[None], device, views, amp)[0])
            except Exception as chip_error:
                probabilities.append(f"model failed: {type(chip_error).__name__}: {chip_error}")
    for (item, nodata), probability in zip(ready, probabilities, strict=True):
        if isinstance(probability, str):
            writer.fallback(item, probability)
            continue
        writer.write(
            item, probability.astype(np.float32), finalize_mask(probability, nodata, model.manifest)
        )


def predict_folder(
    model_dir: str | os.PathLike,
    features_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    probabilities: bool = False,
    batch_size: int = 8,
    num_workers: int = 0,
    device: str | None = None,
    amp: bool = True,
    tta: str | Sequence[str] | None = None,
    chip_ids: Sequence[str] | None = None,
    progress: bool = True,
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
        num_workers: DataLoader worker processes reading chips (0: in this process).
        device: ``cuda``, ``cuda:1``, ``cpu``...; default CUDA when available.
        amp: Use float16 autocast on CUDA (ignored on CPU).
        tta: Override the manifest's TTA views (preset or view names).
        chip_ids: Chips to predict (default: every non-hidden folder).
        progress: Show a progress bar.

    Returns:
        Summary: n_chips, n_written, n_fallback, n_all_nodata, failed (chip -> reason),
        wall_s, chips_per_s, device, tta_views, out_dir.

    Raises:
        FileNotFoundError: No such features folder or model folder.
        ConfigError: Bad device, TTA or batch size.
    """
    from oncloudn.models.folder import load_model_folder

    if batch_size < 1 or num_workers < 0:
        raise ConfigError(
            f"batch size must be >= 1 and workers >= 0, got {batch_size}, {num_workers}"
        )
    device = resolve_device(device)
    views = parse_tta(tta)
    features_dir = str(features_dir)
    chip_ids = list_chip_ids(features_dir) if chip_ids is None else list(chip_ids)
    nested = [name for name in chip_ids if name.endswith(("_features", "_labels"))]
    if nested:
        raise DataError(
            f"{features_dir} looks like a dataset root (it holds {nested[0]}/); pass the "
            f"features folder itself, e.g. {os.path.join(features_dir, nested[0])}"
        )
    model = load_model_folder(model_dir, device)
    views = views or resolve_views(model.manifest.tta)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = _Writer(out, features_dir, list(model.bands), probabilities)
    loader = DataLoader(
        ChipReader(features_dir, chip_ids, model.bands),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_keep_list,
        pin_memory=False,
    )
    start = time.perf_counter()
    bar = tqdm(total=len(chip_ids), desc="predict", unit="chip", disable=not progress)
    with bar:
        for items in loader:
            _process(model, items, writer, device, views, amp)
            bar.update(len(items))
    wall = time.perf_counter() - start
    summary = {
        "n_chips": len(chip_ids),
        "n_written": writer.n_written,
        "n_fallback": len(writer.failed),
        "n_all_nodata": writer.n_all_nodata,
        "failed": dict(writer.failed),
        "wall_s": round(wall, 3),
        "chips_per_s": round(len(chip_ids) / wall, 3) if wall > 0 else None,
        "device": device,
        "tta_views": list(views),
        "out_dir": str(out),
        "output": "probabilities" if probabilities else "masks",
    }
    logger.info(
        "predicted %d chips in %.1f s (%.2f chips/s) on %s, %d fallbacks, TTA %s",
        len(chip_ids),
        wall,
        summary["chips_per_s"] or 0.0,
        device,
        summary["n_fallback"],
        ",".join(views),
    )
    return summary

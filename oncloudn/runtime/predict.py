"""The prediction loop of ``submission/main.py`` (runtime-safe), and its reusable pieces.

``predict_chips`` reads each chip of a features folder, predicts batches, post-processes and
writes exactly one ``<out_dir>/<chip_id>.tif`` per chip (uncompressed uint8 512 x 512, the
input's CRS and transform). It never dies on one chip: a missing band, a corrupt TIFF or a
wrong shape is logged and the chip gets ``fallback_mask`` (the threshold rule on whatever
bands can be read, else all clear); an all-nodata chip gets all zeros; a failing forward
pass on a batch is retried chip by chip, then falls back. Under a time budget the TTA views
are halved (8 -> 4 -> 2 -> 1) when the projected total exceeds ``BUDGET_FRACTION`` of it,
and the remaining chips get the fallback rule if time is nearly out.
"""

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

import numpy as np
import torch

from .bands import BANDS
from .chipio import CHIP_SIZE, list_chip_ids, nodata_mask, read_bands, write_mask
from .chipio import write_probability as _write_probability
from .errors import ChipFormatError
from .manifest import Manifest
from .postprocess import postprocess
from .threshold import THRESHOLD_BANDS, threshold_cloud_score
from .tta import resolve_views, step_down_views

LOGGER = logging.getLogger(__name__)

# Step TTA down when the projected total exceeds this fraction of the time budget.
BUDGET_FRACTION = 0.9
# Past this fraction of the budget, remaining chips get the (fast) fallback rule.
DEADLINE_FRACTION = 0.97
# Batches timed before the first projection.
WARMUP_BATCHES = 2


def predict_batch(
    model: Any,
    raw: np.ndarray,
    device: str = "cpu",
    views: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """Cloud probabilities ``[N, H, W]`` (float32) of raw DN ``[N, C, H, W]``.

    Args:
        model: A loaded model (``load_model``) with ``predict_proba``.
        raw: Raw DN (uint16) in the model's band order.
        device: Torch device of the model.
        views: TTA views overriding the manifest's.
    """
    x = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)).to(device)
    with torch.no_grad():
        probability = model.predict_proba(x, views)
    return probability.float().cpu().numpy()


def finalize_mask(
    probability: np.ndarray, nodata: Optional[np.ndarray], manifest: Manifest
) -> np.ndarray:
    """Post-process one probability map ``[H, W]`` with the manifest's threshold and steps."""
    return postprocess(
        probability, nodata, manifest.threshold, manifest.postprocess, manifest.chip_rules
    )


def _read_band_quietly(chip_dir: str, band: str) -> Optional[np.ndarray]:
    try:
        array = read_bands(chip_dir, [band])[0]
    except Exception:  # noqa: BLE001 - any unreadable band is simply absent
        return None
    return array if array.shape == (CHIP_SIZE, CHIP_SIZE) else None


def fallback_mask(chip_dir: str) -> np.ndarray:
    """A valid 512 x 512 uint8 mask for a chip the model cannot handle.

    The threshold rule on the bands that can be read: it needs B02, B03 and B04; a missing
    B08 is replaced by B04 (which passes the NIR-ratio test). With fewer bands, or on any
    error, the mask is all zeros (clear). Nodata pixels are 0. It reads the rule's own bands
    whatever the model's bands are.

    Args:
        chip_dir: The chip's folder.
    """
    arrays = {band: _read_band_quietly(chip_dir, band) for band in THRESHOLD_BANDS}
    if any(arrays[band] is None for band in THRESHOLD_BANDS[:3]):
        return np.zeros((CHIP_SIZE, CHIP_SIZE), np.uint8)
    if arrays["B08"] is None:
        arrays["B08"] = arrays["B04"]
    raw = np.stack([arrays[band] for band in THRESHOLD_BANDS])
    try:
        score = threshold_cloud_score(raw)
    except Exception:  # noqa: BLE001 - the fallback itself must never fail
        LOGGER.exception("threshold fallback failed on %s", chip_dir)
        return np.zeros((CHIP_SIZE, CHIP_SIZE), np.uint8)
    mask = (score >= 0.5) & ~nodata_mask(raw)
    return mask.astype(np.uint8)


class _Run:
    """Book-keeping of one ``predict_chips`` call."""

    def __init__(self, model, features_dir, out_dir, device, time_budget_s, proba_dir):
        self.model = model
        self.features_dir = features_dir
        self.out_dir = out_dir
        self.device = device
        self.time_budget_s = time_budget_s
        self.proba_dir = proba_dir
        self.bands = list(model.bands) if model is not None else list(BANDS)
        self.manifest = getattr(model, "manifest", None) or Manifest()
        self.views = resolve_views(self.manifest.tta) if model is not None else ["identity"]
        self.initial_views = list(self.views)
        self.start = time.monotonic()
        self.window_start = self.start
        self.window_chips = 0
        self.window_batches = 0
        self.done = 0
        self.n_fallback = 0
        self.n_all_nodata = 0
        self.failed: dict[str, str] = {}
        self.events: list[str] = []
        self.deadline_hit = False

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def write(self, chip_id: str, mask: np.ndarray, profile: Optional[dict]) -> None:
        profile = profile or {}
        try:
            write_mask(
                os.path.join(self.out_dir, chip_id + ".tif"),
                mask,
                crs=profile.get("crs"),
                transform=profile.get("transform"),
            )
        except Exception as error:  # noqa: BLE001 - logged, and the caller's check sees it
            LOGGER.error("chip %s: cannot write its mask: %s", chip_id, error)
            self.failed[chip_id] = f"write failed: {type(error).__name__}: {error}"
            return
        self.done += 1

    def fallback(self, chip_id: str, reason: str) -> None:
        LOGGER.warning("chip %s: %s; writing the fallback mask", chip_id, reason)
        self.failed[chip_id] = reason
        self.n_fallback += 1
        chip_dir = os.path.join(self.features_dir, chip_id)
        self.write(chip_id, fallback_mask(chip_dir), _profile_quietly(chip_dir))


def _profile_quietly(chip_dir: str) -> Optional[dict]:
    for band in BANDS:
        try:
            return read_bands(chip_dir, [band], with_profile=True)[1]
        except Exception:  # noqa: BLE001 - any readable band will do
            continue
    return None


def load_chip(features_dir: str, chip_id: str, bands: Sequence[str]):
    """``(raw [C, 512, 512] uint16, profile)`` of a chip, or the exception that prevented it.

    Safe to run in a worker thread: it has no side effects.
    """
    chip_dir = os.path.join(features_dir, chip_id)
    try:
        raw, profile = read_bands(chip_dir, bands, with_profile=True)
        if raw.shape[-2:] != (CHIP_SIZE, CHIP_SIZE):
            raise ChipFormatError(
                chip_id,
                chip_dir,
                f"bands have shape {raw.shape[-2:]}, expected ({CHIP_SIZE}, {CHIP_SIZE})",
            )
    except Exception as error:  # noqa: BLE001 - one chip must never stop the run
        return error
    return raw, profile


def _admit(run: _Run, chip_id: str, loaded):
    """(raw, nodata, profile) of a loaded chip, or ``None`` after writing its fallback/zeros."""
    if isinstance(loaded, Exception):
        run.fallback(chip_id, f"{type(loaded).__name__}: {loaded}")
        return None
    raw, profile = loaded
    nodata = nodata_mask(raw)
    if nodata.all():
        LOGGER.info("chip %s has no data; writing an all-clear mask", chip_id)
        run.n_all_nodata += 1
        run.write(chip_id, np.zeros((CHIP_SIZE, CHIP_SIZE), np.uint8), profile)
        return None
    return raw, nodata, profile


def _predict_robust(run: _Run, chip_ids: list[str], raws: list[np.ndarray]):
    """Probabilities per chip (``None`` where even the single-chip retry failed)."""
    try:
        return list(predict_batch(run.model, np.stack(raws), run.device, run.views))
    except Exception as error:  # noqa: BLE001
        LOGGER.warning("batch of %d failed (%s); retrying chip by chip", len(raws), error)
        if str(run.device).startswith("cuda"):
            torch.cuda.empty_cache()  # after an out-of-memory error
    results = []
    for chip_id, raw in zip(chip_ids, raws):
        try:
            results.append(predict_batch(run.model, raw[None], run.device, run.views)[0])
        except Exception as error:  # noqa: BLE001
            results.append(None)
            run.failed[chip_id] = f"model failed: {type(error).__name__}: {error}"
    return results


def _process_batch(run: _Run, chip_ids: list[str], reads: list) -> None:
    admitted = [(chip_id, _admit(run, chip_id, item)) for chip_id, item in zip(chip_ids, reads)]
    loaded = [(chip_id, item) for chip_id, item in admitted if item is not None]
    if not loaded:
        return
    ids = [chip_id for chip_id, _ in loaded]
    probabilities = _predict_robust(run, ids, [item[0] for _, item in loaded])
    for (chip_id, (_, nodata, profile)), probability in zip(loaded, probabilities):
        if probability is None:
            run.fallback(chip_id, run.failed.get(chip_id, "model failed"))
            continue
        try:
            mask = finalize_mask(probability, nodata, run.manifest)
            if run.proba_dir:
                _write_probability(
                    os.path.join(run.proba_dir, chip_id + ".tif"),
                    probability,
                    profile.get("crs"),
                    profile.get("transform"),
                )
        except Exception as error:  # noqa: BLE001
            run.fallback(chip_id, f"post-processing failed: {type(error).__name__}: {error}")
            continue
        run.write(chip_id, mask, profile)


def _check_budget(run: _Run, remaining: int) -> None:
    """Halve the TTA views when the projected total exceeds the budget fraction."""
    if not run.time_budget_s or remaining <= 0 or len(run.views) <= 1:
        return
    if run.window_batches < WARMUP_BATCHES or run.window_chips == 0:
        return
    per_chip = (time.monotonic() - run.window_start) / run.window_chips
    projected = run.elapsed() + per_chip * remaining
    if projected <= BUDGET_FRACTION * run.time_budget_s:
        return
    views = step_down_views(run.views)
    message = (
        f"projected {projected:.0f} s > {BUDGET_FRACTION:.0%} of the {run.time_budget_s:.0f} s "
        f"budget: TTA {len(run.views)} -> {len(views)} views ({', '.join(views)})"
    )
    LOGGER.warning(message)
    run.events.append(message)
    run.views = views
    run.window_start = time.monotonic()
    run.window_chips = 0
    run.window_batches = 0


def _past_deadline(run: _Run) -> bool:
    if not run.time_budget_s or run.elapsed() < DEADLINE_FRACTION * run.time_budget_s:
        return False
    if not run.deadline_hit:
        run.deadline_hit = True
        message = (
            f"{run.elapsed():.0f} s used of the {run.time_budget_s:.0f} s budget: remaining "
            "chips get the threshold rule"
        )
        LOGGER.warning(message)
        run.events.append(message)
    return True


def _start_reads(pool: Optional[ThreadPoolExecutor], run: _Run, batch: list[str]) -> list:
    if pool is None:
        return [load_chip(run.features_dir, chip_id, run.bands) for chip_id in batch]
    return [pool.submit(load_chip, run.features_dir, chip_id, run.bands) for chip_id in batch]


def _finish_reads(pending: list) -> list:
    return [item.result() if isinstance(item, Future) else item for item in pending]


def _fallback_batch(run: _Run, batch: list[str]) -> None:
    for chip_id in batch:
        run.n_fallback += 1
        chip_dir = os.path.join(run.features_dir, chip_id)
        run.write(chip_id, fallback_mask(chip_dir), _profile_quietly(chip_dir))


def _log_progress(run: _Run, total: int) -> None:
    rate = run.done / max(run.elapsed(), 1e-9)
    eta = (total - run.done) / max(rate, 1e-9)
    LOGGER.info("%d/%d chips (%.1f chips/s, ETA %.0f s)", run.done, total, rate, eta)


def _summary(run: _Run, chip_ids: list[str]) -> dict[str, Any]:
    wall = run.elapsed()
    summary = {
        "n_chips": len(chip_ids),
        "n_written": run.done,
        "n_fallback": run.n_fallback,
        "n_all_nodata": run.n_all_nodata,
        "failed": dict(run.failed),
        "wall_s": round(wall, 3),
        "chips_per_s": round(len(chip_ids) / wall, 3) if wall > 0 else None,
        "tta_views": list(run.views),
        "tta_views_initial": list(run.initial_views),
        "events": list(run.events),
        "device": str(run.device),
    }
    LOGGER.info(
        "done: %d chips in %.1f s (%.2f chips/s), %d fallbacks, %d all-nodata, TTA %d -> %d views",
        len(chip_ids),
        wall,
        summary["chips_per_s"] or 0.0,
        run.n_fallback,
        run.n_all_nodata,
        len(run.initial_views),
        len(run.views),
    )
    return summary


def predict_chips(
    model: Any,
    features_dir: str,
    out_dir: str,
    chip_ids: Optional[Sequence[str]] = None,
    batch_size: int = 4,
    device: str = "cpu",
    time_budget_s: Optional[float] = None,
    write_probabilities: bool = False,
    probabilities_dir: Optional[str] = None,
    log_every: int = 500,
    num_workers: int = 2,
) -> dict[str, Any]:
    """Predict every chip of ``features_dir`` into ``out_dir/<chip_id>.tif``.

    Args:
        model: A loaded model (``load_model``); ``None`` applies the fallback rule to all.
        features_dir: ``<root>/test_features`` (one folder per chip).
        out_dir: Prediction folder (created); receives exactly one file per chip.
        chip_ids: Chips to predict (default: every non-hidden folder of ``features_dir``).
        batch_size: Chips per forward pass.
        device: Torch device the model lives on.
        time_budget_s: Wall-clock budget; TTA steps down to stay within it.
        write_probabilities: Also write float32 probability maps (to ``probabilities_dir``,
            default ``<out_dir>_probabilities``; never into ``out_dir``).
        probabilities_dir: See ``write_probabilities``.
        log_every: Log progress every this many chips.
        num_workers: Threads reading the next batch while this one is predicted (0: none).

    Returns:
        Summary: ``n_chips``, ``n_written``, ``n_fallback``, ``n_all_nodata``, ``failed``
        (chip id -> reason), ``wall_s``, ``chips_per_s``, ``tta_views`` (at the end),
        ``tta_views_initial``, ``events`` (TTA step-downs, deadline), ``device``.
    """
    chip_ids = list_chip_ids(features_dir) if chip_ids is None else list(chip_ids)
    os.makedirs(out_dir, exist_ok=True)
    proba_dir = None
    if write_probabilities:
        proba_dir = probabilities_dir or os.path.normpath(out_dir) + "_probabilities"
        os.makedirs(proba_dir, exist_ok=True)
    run = _Run(model, features_dir, out_dir, device, time_budget_s, proba_dir)
    batch_size = max(1, int(batch_size))
    batches = [chip_ids[i : i + batch_size] for i in range(0, len(chip_ids), batch_size)]
    LOGGER.info(
        "predicting %d chips from %s on %s, batch %d, TTA %s",
        len(chip_ids),
        features_dir,
        device,
        batch_size,
        ",".join(run.views),
    )
    next_log = log_every
    pool = ThreadPoolExecutor(num_workers) if num_workers > 0 and model is not None else None
    try:
        pending = _start_reads(pool, run, batches[0]) if batches and model is not None else []
        for index, batch in enumerate(batches):
            reads = _finish_reads(pending)
            more = index + 1 < len(batches) and model is not None and not run.deadline_hit
            pending = _start_reads(pool, run, batches[index + 1]) if more else []
            if run.model is None or _past_deadline(run):
                _fallback_batch(run, batch)
            else:
                _process_batch(run, batch, reads)
                run.window_chips += len(batch)
                run.window_batches += 1
                _check_budget(run, len(chip_ids) - index * batch_size - len(batch))
            if run.done >= next_log:
                next_log += log_every
                _log_progress(run, len(chip_ids))
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return _summary(run, chip_ids)

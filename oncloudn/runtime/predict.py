"""The folder level of prediction (runtime-safe): read, predict robustly, write, summarize.

``predict_chips`` reads each chip of a features folder, predicts batches through the array
level (``predict_array.py``), post-processes and writes exactly one ``<out_dir>/<chip_id>.tif``
per chip (uncompressed uint8, the input's CRS and transform), and optionally its float32
probability map. ``submission/main.py``, ``oncloudn predict``, ``flag-labels`` and the
trainer's out-of-fold writing all drive it (or its pieces).

It never dies on one chip: a missing band, a corrupt TIFF or (where ``chip_size`` is given, as
``main.py`` does with 512) a wrong shape is logged and the chip gets ``fallback_mask`` (the
threshold rule on whatever bands can be read, else all clear) with the georeference of any
readable band; an all-nodata chip gets all zeros; a failing forward pass on a batch is retried
chip by chip, then falls back. Under a time budget the TTA views are halved (8 -> 4 -> 2 -> 1)
when the projected total exceeds ``BUDGET_FRACTION`` of it, and the remaining chips get the
fallback rule if time is nearly out.
"""

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from .bands import BANDS
from .chip_reading import fallback_mask, load_chip, profile_quietly
from .chipio import list_chip_ids, nodata_mask, write_mask
from .chipio import write_probability as _write_probability
from .manifest import Manifest
from .predict_array import (
    finalize_mask,
    input_multiple,
    model_probability_fn,
    predict_probabilities,
)
from .tta import resolve_views, step_down_views

LOGGER = logging.getLogger(__name__)

# Step TTA down when the projected total exceeds this fraction of the time budget.
BUDGET_FRACTION = 0.9
# Past this fraction of the budget, remaining chips get the (fast) fallback rule.
DEADLINE_FRACTION = 0.97
# Batches timed before the first projection.
WARMUP_BATCHES = 2
# Log progress every this many chips.
LOG_EVERY = 500
# Writes queued behind the forward pass before the main thread waits for the oldest.
MAX_PENDING_WRITES = 16


def predict_batch(
    model: Any,
    raw: np.ndarray,
    device: str = "cpu",
    views: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """Cloud probabilities ``[N, H, W]`` (float32) of raw DN ``[N, C, H, W]`` of any size.

    Args:
        model: A loaded model (``load_model``) with ``predict_proba``.
        raw: Raw DN (uint16) in the model's band order.
        device: Torch device of the model.
        views: TTA views overriding the manifest's.
    """
    probability_fn = model_probability_fn(model, views)
    return predict_probabilities(probability_fn, raw, device, input_multiple(model))


__all__ = ["fallback_mask", "finalize_mask", "load_chip", "predict_batch", "predict_chips"]


@dataclass(frozen=True)
class _Options:
    """The settings of one ``predict_chips`` call (see its arguments)."""

    mask_dir: Optional[str]
    proba_dir: Optional[str]
    device: str
    time_budget_s: Optional[float]
    chip_size: Optional[int]
    views: Optional[Sequence[str]]
    context: Optional[Callable[[], Any]]
    probability_fn: Optional[Callable[[torch.Tensor], torch.Tensor]]
    chip_rules: bool
    sink: Optional[Callable[[str, np.ndarray, np.ndarray], None]]


class _Run:
    """Book-keeping of one ``predict_chips`` call."""

    def __init__(self, model, features_dir: str, options: _Options):
        self.model = model
        self.features_dir = features_dir
        self.mask_dir = options.mask_dir
        self.proba_dir = options.proba_dir
        self.device = options.device
        self.time_budget_s = options.time_budget_s
        self.chip_size = options.chip_size
        self.context = options.context
        self.fixed_fn = options.probability_fn
        self.chip_rules = options.chip_rules
        self.sink = options.sink
        self.bands = list(model.bands) if model is not None else list(BANDS)
        self.manifest = getattr(model, "manifest", None) or Manifest()
        self.multiple = input_multiple(model)
        tta = options.views if options.views is not None else self.manifest.tta
        self.views = resolve_views(tta) if model is not None else ["identity"]
        self.initial_views = list(self.views)
        self.probability_fn = self._make_probability_fn()
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
        self.writer: Optional[ThreadPoolExecutor] = None
        self.pending_writes: deque = deque()

    def _make_probability_fn(self):
        if self.fixed_fn is not None or self.model is None:
            return self.fixed_fn
        return model_probability_fn(self.model, self.views, self.context)

    def set_views(self, views: list[str]) -> None:
        self.views = views
        self.probability_fn = self._make_probability_fn()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def write(
        self, chip_id: str, mask: np.ndarray, profile: Optional[dict], probability=None
    ) -> None:
        """Write the chip's files: in the writer thread when there is one, else now.

        One writer thread keeps the order and the book-keeping of :meth:`write_now`
        serial; at most ``MAX_PENDING_WRITES`` writes wait behind the forward pass.
        """
        if self.writer is None:
            self.write_now(chip_id, mask, profile, probability)
            return
        self.pending_writes.append(
            self.writer.submit(self.write_now, chip_id, mask, profile, probability)
        )
        while len(self.pending_writes) > MAX_PENDING_WRITES:
            self.pending_writes.popleft().result()

    def write_now(
        self, chip_id: str, mask: np.ndarray, profile: Optional[dict], probability=None
    ) -> None:
        """Write the chip's mask (and probability; the mask as float32 where there is none)."""
        profile = profile or {}
        crs, transform = profile.get("crs"), profile.get("transform")
        try:
            if self.mask_dir:
                write_mask(os.path.join(self.mask_dir, chip_id + ".tif"), mask, crs, transform)
            values = mask.astype(np.float32) if probability is None else probability
            if self.proba_dir:
                path = os.path.join(self.proba_dir, chip_id + ".tif")
                _write_probability(path, values, crs, transform)
            if self.sink is not None:
                self.sink(chip_id, values, mask)
        except Exception as error:  # noqa: BLE001 - logged, and the caller's check sees it
            LOGGER.error("chip %s: cannot write its mask: %s", chip_id, error)
            self.failed[chip_id] = f"write failed: {type(error).__name__}: {error}"
            return
        self.done += 1

    def fallback(self, chip_id: str, reason: Optional[str]) -> None:
        """Write the threshold rule's mask, georeferenced like any readable band."""
        if reason is not None:
            LOGGER.warning("chip %s: %s; writing the fallback mask", chip_id, reason)
            self.failed[chip_id] = reason
        self.n_fallback += 1
        chip_dir = os.path.join(self.features_dir, chip_id)
        profile = profile_quietly(chip_dir, self.chip_size)
        self.write(chip_id, fallback_mask(chip_dir, self.chip_size), profile)


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
        run.write(chip_id, np.zeros(nodata.shape, np.uint8), profile)
        return None
    return raw, nodata, profile


def _predict_one_batch(run: _Run, raws: list[np.ndarray]) -> list[np.ndarray]:
    return list(predict_probabilities(run.probability_fn, np.stack(raws), run.device, run.multiple))


def _predict_robust(run: _Run, chip_ids: list[str], raws: list[np.ndarray]):
    """Probabilities per chip (``None`` where even the single-chip retry failed)."""
    try:
        return _predict_one_batch(run, raws)
    except Exception as error:  # noqa: BLE001
        LOGGER.warning("batch of %d failed (%s); retrying chip by chip", len(raws), error)
        if str(run.device).startswith("cuda"):
            torch.cuda.empty_cache()  # after an out-of-memory error
    results = []
    for chip_id, raw in zip(chip_ids, raws):
        try:
            results.append(_predict_one_batch(run, [raw])[0])
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
            mask = finalize_mask(probability, nodata, run.manifest, run.chip_rules)
        except Exception as error:  # noqa: BLE001
            run.fallback(chip_id, f"post-processing failed: {type(error).__name__}: {error}")
            continue
        run.write(chip_id, mask, profile, probability.astype(np.float32))


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
    run.set_views(views)
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
    args = [(run.features_dir, chip_id, run.bands, run.chip_size) for chip_id in batch]
    if pool is None:
        return [load_chip(*chip_args) for chip_args in args]
    return [pool.submit(load_chip, *chip_args) for chip_args in args]


def _finish_reads(pending: list) -> list:
    return [item.result() if isinstance(item, Future) else item for item in pending]


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


def _output_dirs(out_dir, write_masks, write_probabilities, probabilities_dir):
    mask_dir = out_dir if write_masks and out_dir else None
    proba_dir = None
    if write_probabilities:
        proba_dir = probabilities_dir or os.path.normpath(out_dir) + "_probabilities"
    for folder in (mask_dir, proba_dir):
        if folder:
            os.makedirs(folder, exist_ok=True)
    return mask_dir, proba_dir


def _run_batches(run: _Run, batches: list, n_chips: int, num_workers: int, progress) -> None:
    model = run.model
    next_log = LOG_EVERY
    chips_done = 0
    pool = ThreadPoolExecutor(num_workers) if num_workers > 0 and model is not None else None
    run.writer = ThreadPoolExecutor(1) if num_workers > 0 else None
    try:
        pending = _start_reads(pool, run, batches[0]) if batches and model is not None else []
        for index, batch in enumerate(batches):
            reads = _finish_reads(pending)
            more = index + 1 < len(batches) and model is not None and not run.deadline_hit
            pending = _start_reads(pool, run, batches[index + 1]) if more else []
            chips_done += len(batch)
            if model is None or _past_deadline(run):
                for chip_id in batch:
                    run.fallback(chip_id, None)
            else:
                _process_batch(run, batch, reads)
                run.window_chips += len(batch)
                run.window_batches += 1
                _check_budget(run, n_chips - chips_done)
            if progress is not None:
                progress(len(batch))
            if run.done >= next_log:
                next_log += LOG_EVERY
                _log_progress(run, n_chips)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        if run.writer is not None:
            run.writer.shutdown(wait=True)  # every queued write finishes (write_now never raises)
            run.writer = None
            run.pending_writes.clear()


def predict_chips(
    model: Any,
    features_dir: str,
    out_dir: Optional[str],
    chip_ids: Optional[Sequence[str]] = None,
    batch_size: int = 4,
    device: str = "cpu",
    time_budget_s: Optional[float] = None,
    write_probabilities: bool = False,
    probabilities_dir: Optional[str] = None,
    num_workers: int = 2,
    chip_size: Optional[int] = None,
    views: Optional[Sequence[str]] = None,
    context: Optional[Callable[[], Any]] = None,
    probability_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    write_masks: bool = True,
    chip_rules: bool = True,
    progress: Optional[Callable[[int], None]] = None,
    sink: Optional[Callable[[str, np.ndarray, np.ndarray], None]] = None,
) -> dict[str, Any]:
    """Predict every chip of ``features_dir`` into ``out_dir/<chip_id>.tif``.

    Args:
        model: A loaded model (``load_model``); ``None`` applies the fallback rule to all.
        features_dir: ``<root>/test_features`` (one folder per chip).
        out_dir: Prediction folder (created); receives exactly one mask per chip (``None``:
            no mask files, e.g. with a ``sink``).
        chip_ids: Chips to predict (default: every non-hidden folder of ``features_dir``).
        batch_size: Chips per forward pass.
        device: Torch device the model lives on.
        time_budget_s: Wall-clock budget; TTA steps down to stay within it.
        write_probabilities: Also write float32 probability maps (to ``probabilities_dir``,
            default ``<out_dir>_probabilities``; never into ``out_dir``).
        probabilities_dir: See ``write_probabilities``.
        num_workers: Threads reading the next batch while this one is predicted; with any,
            one more thread writes finished chips behind the forward pass (0: neither).
        chip_size: The side every chip must have (``main.py``: 512); others fall back.
            ``None`` predicts any size the network accepts (padded to its stride).
        views: TTA views overriding the manifest's.
        context: A factory of a context manager around each forward pass (e.g. autocast).
        probability_fn: An injected forward pass (raw DN tensor -> probabilities), used
            instead of the model's ``predict_proba`` (TTA views then do not apply).
        write_masks: Write the masks to ``out_dir`` (``False``: probabilities only).
        chip_rules: Apply the manifest's chip-level rules.
        progress: Called with the number of chips of each finished batch.
        sink: Called as ``sink(chip_id, probability, mask)`` for every chip written (the
            probability of a fallback chip is its mask as float32), to keep results in memory.

    Returns:
        Summary: ``n_chips``, ``n_written``, ``n_fallback``, ``n_all_nodata``, ``failed``
        (chip id -> reason), ``wall_s``, ``chips_per_s``, ``tta_views`` (at the end),
        ``tta_views_initial``, ``events`` (TTA step-downs, deadline), ``device``.
    """
    chip_ids = list_chip_ids(features_dir) if chip_ids is None else list(chip_ids)
    mask_dir, proba_dir = _output_dirs(out_dir, write_masks, write_probabilities, probabilities_dir)
    options = _Options(
        mask_dir=mask_dir,
        proba_dir=proba_dir,
        device=device,
        time_budget_s=time_budget_s,
        chip_size=chip_size,
        views=views,
        context=context,
        probability_fn=probability_fn,
        chip_rules=chip_rules,
        sink=sink,
    )
    run = _Run(model, features_dir, options)
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
    _run_batches(run, batches, len(chip_ids), num_workers, progress)
    return _summary(run, chip_ids)

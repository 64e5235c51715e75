"""``bench predict``: model chips/s per backend, TTA cost, post-processing, a reference row.

The chips are read once into memory, so the figures are the model's (normalization, forward
pass, TTA merge; no disk). Backends of one ``network`` model folder:

- ``eager``: the plain torch model as loaded;
- ``fast``: the runtime's fast path (``oncloudn/runtime/fast.py``, what ``main.py`` runs);
- ``onnx``, ``openvino``, ``openvino-fp16``, ``int8``: the folder exported to a temporary
  folder (``oncloudn/export``; int8 calibrated on the benchmark's own chips) and run through
  its model kind.

Then the TTA cost on the ``fast`` backend for 1, 2, 4 and 8 views, the post-processing
(threshold, morphology, chip rules of the manifest) in ms per chip, and a reference row: the
competition benchmark's model, an smp U-Net ResNet-34 (random weights) at batch 1, fp32,
eager, so ratios come from one run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncloudn.errors import ConfigError
from oncloudn.inference.bench_read import bench_chip_ids
from oncloudn.inference.bench_timing import (
    BenchRow,
    format_rows,
    load_average,
    peak_rss_mib,
    time_repeats,
)
from oncloudn.inference.compare import flops_per_chip, folder_size, trainable_parameters
from oncloudn.models.folder import load_model_folder
from oncloudn.runtime.chipio import nodata_mask, read_bands
from oncloudn.runtime.fast import accelerate_model
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.models import CloudModel
from oncloudn.runtime.networks import build_network
from oncloudn.runtime.predict_array import (
    finalize_mask,
    input_multiple,
    model_probability_fn,
    predict_probabilities,
)
from oncloudn.runtime.threads import configure_threads
from oncloudn.runtime.tta import resolve_views

logger = logging.getLogger(__name__)

BACKENDS = ("eager", "fast", "onnx", "openvino", "openvino-fp16", "int8")
TTA_VIEWS = {
    count: resolve_views(preset)
    for count, preset in ((1, "none"), (2, "hflip"), (4, "flips4"), (8, "d4"))
}
REFERENCE_NAME = "reference: smp Unet resnet34, batch 1, fp32 eager"


@dataclass
class PredictBench:
    """Everything ``bench predict`` measured (see the module docstring)."""

    model: str
    threads: int
    batch_size: int
    n_chips: int
    backends: list[BenchRow]
    tta: list[BenchRow]
    postprocess: BenchRow | None
    reference: BenchRow | None
    load_average_before: list[float] | None
    load_average_after: list[float] | None
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict (every row has ``chips_per_s``)."""
        rows = lambda items: [row.to_dict() for row in items]  # noqa: E731
        return {
            "model": self.model,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "n_chips": self.n_chips,
            "backends": rows(self.backends),
            "tta": rows(self.tta),
            "postprocess": self.postprocess.to_dict() if self.postprocess else None,
            "reference": self.reference.to_dict() if self.reference else None,
            "load_average_before": self.load_average_before,
            "load_average_after": self.load_average_after,
            "skipped": dict(self.skipped),
        }

    def format(self) -> str:
        """The tables ``bench predict`` prints."""
        keys = ("params", "file_mib", "gflops", "peak_rss_mib", "vs_reference")
        parts = [
            f"bench predict {self.model}: {self.n_chips} chips in memory, batch "
            f"{self.batch_size}, {self.threads} threads, load average "
            f"{self.load_average_before} -> {self.load_average_after}",
            format_rows("backends (model only, 1 view):", self.backends, keys),
        ]
        if self.tta:
            parts.append(format_rows("TTA views (fast backend):", self.tta))
        if self.postprocess:
            parts.append(format_rows("post-processing (per chip):", [self.postprocess]))
        if self.reference:
            parts.append(format_rows("reference:", [self.reference], ("params",)))
        parts += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(parts)


def read_chips(features_dir: str | os.PathLike, chip_ids: Sequence[str], bands) -> np.ndarray:
    """Raw chips ``[N, C, H, W]`` (uint16) of a features folder, in memory."""
    folder = os.fspath(features_dir)
    return np.stack([read_bands(os.path.join(folder, chip_id), bands) for chip_id in chip_ids])


def _runner(model: Any, chips: np.ndarray, batch_size: int, views) -> Callable[[], None]:
    probability_fn = model_probability_fn(model, views)
    multiple = input_multiple(model)

    def run() -> None:
        for start in range(0, len(chips), batch_size):
            predict_probabilities(
                probability_fn, chips[start : start + batch_size], "cpu", multiple
            )

    return run


def _export(backend: str, folder: Path, out: Path, chips_dir: str, threads: int) -> Path:
    # lazy: the export package pulls onnx / openvino only when a backend needs them
    from oncloudn.export.onnx_export import export_onnx
    from oncloudn.export.openvino_export import export_openvino

    if backend == "onnx":
        return export_onnx(folder, out, threads=threads).folder
    if backend == "int8":
        return export_onnx(
            folder, out, threads=threads, int8=True, calibration_dir=chips_dir, calibration_limit=8
        ).folder
    return export_openvino(folder, out, fp16=backend == "openvino-fp16", threads=threads).folder


def _backend_model(backend: str, source: Any, folder: Path, temp: Path, chips_dir: str, threads):
    """``(model, files folder)`` of one backend."""
    if backend == "eager":
        return source, folder
    if backend == "fast":
        return accelerate_model(source, "cpu", "auto")[0], folder
    exported = _export(backend, folder, temp / backend, chips_dir, threads)
    return load_model_folder(exported), exported


def _figures(model: Any, files: Path, source: Any) -> dict[str, Any]:
    return {
        "params": trainable_parameters(source, files) if files else None,
        "file_mib": round(folder_size(files) / 2**20, 2),
        "gflops": round(flops_per_chip(source) / 1e9, 2) if flops_per_chip(source) else None,
    }


def reference_model() -> CloudModel:
    """The DrivenData benchmark's network: smp U-Net ResNet-34, random weights, raw DN."""
    manifest = Manifest(
        name="smp-unet-resnet34",
        architecture={"name": "smp", "args": {"arch": "Unet", "encoder_name": "resnet34"}},
        normalization={"name": "raw", "params": {}},
    )
    network = build_network("smp", manifest.architecture["args"], 4, 1)
    return CloudModel(network, manifest).eval()


def bench_predict(
    model_dir: str | os.PathLike,
    features_dir: str | os.PathLike,
    limit: int | None = 8,
    repeats: int = 3,
    batch_size: int = 2,
    backends: Sequence[str] = BACKENDS,
    tta_counts: Sequence[int] = (1, 2, 4, 8),
    reference_chips: int = 2,
    threads: int | None = None,
) -> PredictBench:
    """Measure one ``network`` model folder on every backend (see the module docstring).

    Args:
        model_dir: The model folder.
        features_dir: Chips to run (read once into memory).
        limit: At most this many chips.
        repeats: Timed repeats per row (medians reported).
        batch_size: Chips per forward pass.
        backends: Backends of :data:`BACKENDS` to run; a backend that cannot be built here
            (a missing package) is listed under ``skipped`` with the reason.
        tta_counts: TTA view counts to time on the ``fast`` backend (from 1, 2, 4, 8).
        reference_chips: Chips for the reference row (0: no reference row).
        threads: Threads for torch, ONNX Runtime and OpenVINO (default: the CPUs available).

    Raises:
        ConfigError: An unknown backend or TTA count, a missing folder, or no chips.
    """
    unknown = [b for b in backends if b not in BACKENDS] + [
        str(c) for c in tta_counts if c not in TTA_VIEWS
    ]
    if unknown:
        raise ConfigError(
            f"unknown backends or TTA counts {unknown}; backends: {', '.join(BACKENDS)}; "
            "TTA counts: 1, 2, 4, 8"
        )
    before = load_average()
    threads = configure_threads(threads)
    folder = Path(model_dir)
    source = load_model_folder(folder)
    chip_ids = bench_chip_ids(features_dir, limit)
    chips = read_chips(features_dir, chip_ids, source.bands)
    rows, skipped = [], {}
    with tempfile.TemporaryDirectory() as temp, torch.no_grad():
        for backend in backends:
            try:
                model, files = _backend_model(
                    backend, source, folder, Path(temp), str(features_dir), threads
                )
            except (ConfigError, ImportError) as error:
                skipped[backend] = str(error)
                continue
            row = time_repeats(
                _runner(model, chips, batch_size, ["identity"]), len(chips), repeats, backend
            )
            row.extra = {**_figures(model, files, source), "peak_rss_mib": round(peak_rss_mib())}
            rows.append(row)
            logger.info("bench predict %s: %.2f chips/s", backend, row.chips_per_s)
        fast = accelerate_model(source, "cpu", "auto")[0]
        tta = [
            time_repeats(
                _runner(fast, chips, batch_size, TTA_VIEWS[count]),
                len(chips),
                repeats,
                f"{count} view{'s' if count > 1 else ''}",
            )
            for count in tta_counts
        ]
        post = _bench_postprocess(fast, chips, repeats)
        reference = _bench_reference(chips[:reference_chips], repeats) if reference_chips else None
    if reference is not None:
        for row in rows:
            row.extra["vs_reference"] = round(row.chips_per_s / reference.chips_per_s, 1)
    return PredictBench(
        str(folder), threads, batch_size, len(chips), rows, tta, post, reference, before,
        load_average(), skipped,
    )  # fmt: skip


def _bench_postprocess(model: Any, chips: np.ndarray, repeats: int) -> BenchRow:
    probabilities = predict_probabilities(
        model_probability_fn(model, ["identity"]), chips, "cpu", input_multiple(model)
    )
    nodata = [nodata_mask(chip) for chip in chips]

    def run() -> None:
        for probability, mask in zip(probabilities, nodata, strict=True):
            finalize_mask(probability, mask, model.manifest)

    return time_repeats(run, len(chips), repeats, "threshold + post-processing + chip rules")


def _bench_reference(chips: np.ndarray, repeats: int) -> BenchRow:
    model = reference_model()
    start = time.perf_counter()
    row = time_repeats(_runner(model, chips, 1, ["identity"]), len(chips), repeats, REFERENCE_NAME)
    row.extra = {"params": sum(p.numel() for p in model.parameters())}
    logger.info("reference row took %.1f s", time.perf_counter() - start)
    return row

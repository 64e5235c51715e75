"""``bench zip``: a packed zip run the runtime way, start-up and chips/s reported apart.

Each repeat is a full :func:`~oncloudn.submission.run_local.run_local` (unzipped into a
sandbox, import guard, read-only data, the runtime's four checks) with the runtime Python
when one is built (``oncloudn runtime-env install-python``), else this interpreter. From
``main.py``'s own summary: the prediction phase's chips/s (reading, forward pass,
post-processing, writing), and start-up = the whole run's wall time minus that phase
(interpreter, imports, model load, fast-path preparation). Medians of the repeats.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oncloudn.errors import SubmissionError
from oncloudn.inference.bench_timing import BenchRow, load_average
from oncloudn.submission.run_local import run_local


@dataclass
class ZipRun:
    """One ``main.py`` run: whole wall seconds, prediction-phase seconds, chips."""

    wall_s: float
    predict_s: float
    n_chips: int
    fast_layout: str | None


def _one_run(zip_path: Path, data_root: Path, out: Path, python: str | None) -> ZipRun:
    result = run_local(zip_path, data_root, out, python=python, force=True)
    if not result.passed:
        raise SubmissionError(f"{zip_path}: run-local checks failed: {result.problems}")
    summary: dict[str, Any] = {}
    run_json = out / "run.json"
    if run_json.is_file():
        summary = json.loads(run_json.read_text(encoding="utf-8")).get("main_summary") or {}
    predict_s = float(summary.get("wall_s") or result.wall_s)
    return ZipRun(result.wall_s, predict_s, result.n_chips, summary.get("fast_layout"))


def bench_zip(
    zip_path: str | os.PathLike,
    data_root: str | os.PathLike,
    repeats: int = 3,
    python: str | None = None,
) -> BenchRow:
    """Median chips/s of a zip's prediction phase, with start-up seconds beside it.

    Returns:
        A row whose ``chips_per_s`` is the prediction phase's; ``extra`` holds
        ``startup_s``, ``whole_run_chips_per_s``, ``wall_s`` (medians), the runs, the
        fast-path layout main.py used and the load average before and after.

    Raises:
        SubmissionError: A run failed its checks, or ``repeats`` below 1.
    """
    if repeats < 1:
        raise SubmissionError(f"--repeats must be >= 1 (got {repeats})")
    before = load_average()
    runs = []
    with tempfile.TemporaryDirectory() as temp:
        for _ in range(repeats):
            runs.append(_one_run(Path(zip_path), Path(data_root), Path(temp) / "run", python))
    n_chips = runs[0].n_chips
    predict_rate = statistics.median(run.n_chips / max(run.predict_s, 1e-9) for run in runs)
    extra = {
        "startup_s": round(statistics.median(run.wall_s - run.predict_s for run in runs), 2),
        "whole_run_chips_per_s": round(
            statistics.median(run.n_chips / max(run.wall_s, 1e-9) for run in runs), 3
        ),
        "wall_s": round(statistics.median(run.wall_s for run in runs), 2),
        "fast_layout": runs[0].fast_layout,
        "runs": [vars(run) for run in runs],
        "load_average_before": before,
        "load_average_after": load_average(),
    }
    return BenchRow(
        name=Path(zip_path).name,
        chips_per_s=round(predict_rate, 3),
        ms_per_chip=round(1000.0 / predict_rate, 2),
        repeats=repeats,
        n_chips=n_chips,
        extra=extra,
    )

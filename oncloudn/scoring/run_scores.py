"""Score a ``run-local`` output folder and, when asked, record it on the local leaderboard.

``oncloudn run-local`` writes ``OUT/predictions/`` and ``OUT/run.json`` (zip hash, model
summary, timings, checks). :func:`score_run` scores the predictions against labels, adds the
aggregate scores (and the leaderboard row, when recorded) to that ``run.json``, and returns
the full report. The CLI's ``run-local --labels`` and the demo call it after the run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oncloudn.errors import DataError
from oncloudn.runtime.atomic import atomic_write_json
from oncloudn.scoring.leaderboard import default_db_path, load_run_info, record_run, run_info_path
from oncloudn.scoring.report import ScoreReport, score_folders

logger = logging.getLogger(__name__)

SCORE_KEYS = ("jaccard", "ci_low", "ci_high", "precision", "recall", "n_chips", "label_dir")


@dataclass
class ScoredRun:
    """A scored run-local output.

    Attributes:
        report: The full report (per-chip rows included).
        scores: The aggregate scores and per-location table, as written to ``run.json``.
        run_json: The updated ``run.json``.
        run_id: The leaderboard row id when recorded, else ``None``.
        db_path: The leaderboard database when recorded, else ``None``.
    """

    report: ScoreReport
    scores: dict[str, Any]
    run_json: Path
    run_id: int | None = None
    db_path: Path | None = None


def score_summary(report: ScoreReport) -> dict[str, Any]:
    """The aggregate scores and the per-location table (no per-chip rows) of a report."""
    full = report.to_dict()
    summary = {key: full.get(key) for key in SCORE_KEYS}
    summary["per_location"] = full.get("per_location", [])
    return summary


def score_run(
    pred_dir: str | Path,
    labels_dir: str | Path,
    checked_chip_ids: Iterable[str] | None = None,
    record: bool = False,
    db_path: str | Path | None = None,
    name: str | None = None,
) -> ScoredRun:
    """Score a run-local output and add the scores to the ``run.json`` beside ``pred_dir``.

    Locations come from ``test_metadata.csv`` of the run's data root when it has one.

    Args:
        pred_dir: ``OUT/predictions`` of a run-local output.
        labels_dir: Labels (``<chip_id>.tif``) to score against.
        checked_chip_ids: Chips for which run-local's checks already passed (not re-checked).
        record: Also record the run on the local leaderboard.
        db_path: The leaderboard database (default: the leaderboard's own default).
        name: Name of the leaderboard row (default: the model's name, else the zip's stem).

    Returns:
        The report, the scores written to ``run.json`` and the leaderboard row.

    Raises:
        DataError: No ``run.json`` beside ``pred_dir`` (score a plain folder with
            ``oncloudn score`` instead), or labels that cannot be read.
        SubmissionError: The predictions break a runtime rule.
    """
    pred_dir, run_json = Path(pred_dir).resolve(), run_info_path(pred_dir)
    info = load_run_info(pred_dir)
    if not info:
        raise DataError(
            f"{run_json} does not exist: {pred_dir} is not a run-local output; score a plain "
            "predictions folder with `oncloudn score PRED_DIR LABEL_DIR`"
        )
    data_root = info.get("data_root")
    metadata = Path(data_root) / "test_metadata.csv" if data_root else None
    report = score_folders(
        pred_dir,
        Path(labels_dir).resolve(),
        metadata_csv=metadata if metadata and metadata.is_file() else None,
        checked_chip_ids=checked_chip_ids,
    )
    result = ScoredRun(report=report, scores=score_summary(report), run_json=run_json)
    info["scores"] = result.scores
    if record:
        model = info.get("model") or {}
        record_info = {
            **info,
            "name": name or model.get("name") or Path(info.get("zip", pred_dir.parent)).stem,
            "manifest": model,
            "pred_dir": str(pred_dir),
        }
        result.db_path = Path(db_path).resolve() if db_path is not None else default_db_path()
        result.run_id = record_run(result.db_path, report, record_info)
        info["leaderboard"] = {"db": str(result.db_path), "id": result.run_id}
    atomic_write_json(run_json, info, default=str)
    return result

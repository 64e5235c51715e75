"""Score predictions against labels: pooled Jaccard, interval, per-location and per-chip tables.

Two entry points share one code path (:class:`ReportBuilder`) so the numbers are identical:
:func:`score_folders` (files on disk, checked against the runtime's rules first) and
:func:`score_arrays` (in-memory masks, e.g. the trainer's validation).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from oncloudn.data.chips import UNKNOWN_LOCATION, read_metadata
from oncloudn.errors import DataError
from oncloudn.runtime.folders import folder_problem
from oncloudn.scoring.checks import assert_valid_predictions, read_with_tifffile
from oncloudn.scoring.metric import (
    ChipCounts,
    bootstrap_ci,
    chip_counts,
    precision,
    recall,
    total_counts,
)

logger = logging.getLogger(__name__)

PER_CHIP_COLUMNS = [
    "chip_id",
    "location",
    "intersection",
    "union",
    "jaccard",
    "label_cloud_fraction",
    "pred_cloud_fraction",
    "fp",
    "fn",
    "n_valid",
]
PER_LOCATION_COLUMNS = ["location", "n_chips", "intersection", "union", "jaccard"]


@dataclass
class ScoreReport:
    """Scores of a set of predicted masks.

    Attributes:
        jaccard: Pooled Jaccard (the competition metric); ``nan`` for an empty union.
        ci_low: Lower end of the bootstrap interval (``nan`` when disabled).
        ci_high: Upper end of the bootstrap interval.
        precision: Pooled precision.
        recall: Pooled recall.
        n_chips: Number of chips scored.
        per_chip: One row per chip (``PER_CHIP_COLUMNS``); cloud fractions are of valid pixels
            and ``jaccard`` is ``nan`` where the chip's union is empty.
        per_location: Pooled scores per location (``PER_LOCATION_COLUMNS``), worst first.
        alpha: 1 - confidence level of the interval.
        n_bootstrap: Resamples of the interval.
        seed: Seed of the interval.
        ignore_value: Label value left out of the counts, if any.
        pred_dir: Predictions folder (when scored from files).
        label_dir: Labels folder (when scored from files).
        totals: Counts summed over every chip.
    """

    jaccard: float
    ci_low: float
    ci_high: float
    precision: float
    recall: float
    n_chips: int
    per_chip: pd.DataFrame
    per_location: pd.DataFrame
    alpha: float = 0.05
    n_bootstrap: int = 1000
    seed: int = 0
    ignore_value: int | None = None
    pred_dir: str | None = None
    label_dir: str | None = None
    totals: ChipCounts = field(default_factory=ChipCounts)

    def worst(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` chips with the lowest Jaccard (most wrong pixels first among ties);
        chips with an empty union (perfect, 0/0) come last."""
        frame = self.per_chip.assign(errors=self.per_chip["fp"] + self.per_chip["fn"])
        frame = frame.sort_values(
            ["jaccard", "errors"], ascending=[True, False], na_position="last", kind="stable"
        )
        return frame.head(k).drop(columns="errors").reset_index(drop=True)

    def to_dict(self) -> dict:
        """A JSON-ready dict (``nan`` becomes ``None``) with the aggregate scores and tables."""
        return _json_ready(
            {
                "jaccard": self.jaccard,
                "ci_low": self.ci_low,
                "ci_high": self.ci_high,
                "confidence": 1 - self.alpha,
                "n_bootstrap": self.n_bootstrap,
                "seed": self.seed,
                "precision": self.precision,
                "recall": self.recall,
                "n_chips": self.n_chips,
                "ignore_value": self.ignore_value,
                "pred_dir": self.pred_dir,
                "label_dir": self.label_dir,
                "totals": {
                    "intersection": self.totals.intersection,
                    "union": self.totals.union,
                    "tp": self.totals.tp,
                    "fp": self.totals.fp,
                    "fn": self.totals.fn,
                    "n_valid": self.totals.n_valid,
                },
                "per_location": self.per_location.to_dict(orient="records"),
                "per_chip": self.per_chip.to_dict(orient="records"),
            }
        )

    def format(self, worst: int = 10) -> str:
        """Readable text: the score with its interval, precision/recall, per-location table
        and the ``worst`` lowest-scoring chips."""
        confidence = round(100 * (1 - self.alpha))
        interval = (
            f"  ({confidence}% CI {self.ci_low:.4f} - {self.ci_high:.4f}, "
            f"{self.n_bootstrap} chip resamples)"
            if not math.isnan(self.ci_low)
            else ""
        )
        lines = [
            f"Jaccard (pooled over {self.n_chips} chips): {self.jaccard:.4f}{interval}",
            f"precision {self.precision:.4f}   recall {self.recall:.4f}   "
            f"cloud pixels: {self.totals.n_label:,} labelled, {self.totals.n_pred:,} predicted",
        ]
        if self.ignore_value is not None:
            lines.append(f"label pixels equal to {self.ignore_value} ignored")
        lines += ["", "Per location (pooled, worst first):", _table(self.per_location)]
        if worst > 0:
            lines += ["", f"Worst {min(worst, self.n_chips)} chips:", _table(self.worst(worst))]
        return "\n".join(lines)


def _table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "  (none)"
    return frame.to_string(index=False, float_format=lambda value: f"{value:.4f}")


def _json_ready(value: object) -> object:
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class ReportBuilder:
    """Accumulates per-chip counts and builds a :class:`ScoreReport` (one code path for
    every caller).

    Args:
        ignore_value: Label value left out of the counts, if any.
    """

    def __init__(self, ignore_value: int | None = None) -> None:
        self.ignore_value = ignore_value
        self._rows: list[dict] = []
        self._counts: list[ChipCounts] = []

    def add(
        self, chip_id: str, pred: np.ndarray, label: np.ndarray, location: str | None = None
    ) -> ChipCounts:
        """Count one chip and remember it."""
        try:
            counts = chip_counts(pred, label, self.ignore_value)
        except DataError as error:
            raise DataError(f"chip {chip_id!r}: {error}") from None
        valid = counts.n_valid or 1
        self._counts.append(counts)
        self._rows.append(
            {
                "chip_id": chip_id,
                "location": location or UNKNOWN_LOCATION,
                "intersection": counts.intersection,
                "union": counts.union,
                "jaccard": counts.jaccard,
                "label_cloud_fraction": counts.n_label / valid,
                "pred_cloud_fraction": counts.n_pred / valid,
                "fp": counts.fp,
                "fn": counts.fn,
                "n_valid": counts.n_valid,
            }
        )
        return counts

    def build(self, n_bootstrap: int = 1000, seed: int = 0, alpha: float = 0.05) -> ScoreReport:
        """The report of every chip added so far.

        Raises:
            DataError: No chip was added.
        """
        if not self._rows:
            raise DataError("no chips to score; check the label folder and the chip ids")
        per_chip = pd.DataFrame(self._rows, columns=PER_CHIP_COLUMNS)
        totals = total_counts(self._counts)
        low, high = bootstrap_ci(
            per_chip["intersection"].to_numpy(),
            per_chip["union"].to_numpy(),
            n_boot=n_bootstrap,
            seed=seed,
            alpha=alpha,
        )
        if totals.union == 0:
            logger.warning("no cloud predicted nor labelled in any chip: Jaccard is 0/0 = nan")
        report = ScoreReport(
            jaccard=totals.jaccard,
            ci_low=low,
            ci_high=high,
            precision=precision(totals),
            recall=recall(totals),
            n_chips=len(per_chip),
            per_chip=per_chip,
            per_location=_per_location(per_chip),
            alpha=alpha,
            n_bootstrap=n_bootstrap,
            seed=seed,
            ignore_value=self.ignore_value,
            totals=totals,
        )
        logger.info(
            "scored %d chips: Jaccard %.4f (CI %.4f-%.4f)",
            report.n_chips,
            report.jaccard,
            low,
            high,
        )
        return report


def _per_location(per_chip: pd.DataFrame) -> pd.DataFrame:
    grouped = per_chip.groupby("location", sort=True).agg(
        n_chips=("chip_id", "size"), intersection=("intersection", "sum"), union=("union", "sum")
    )
    grouped["jaccard"] = grouped["intersection"] / grouped["union"].replace(0, np.nan)
    grouped = grouped.reset_index()[PER_LOCATION_COLUMNS]
    return grouped.sort_values(
        ["jaccard", "location"], na_position="last", kind="stable"
    ).reset_index(drop=True)


def score_arrays(
    preds: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    locations: Mapping[str, str] | None = None,
    ignore_value: int | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> ScoreReport:
    """Score in-memory masks (same numbers as :func:`score_folders` on the same masks).

    Args:
        preds: Predicted masks by chip id (nonzero = cloud).
        labels: Labels by chip id; these define the chips scored.
        locations: Location of each chip id (``unknown`` where absent).
        ignore_value: Label value left out of the counts (e.g. 255), or ``None``.
        n_bootstrap: Resamples of the interval (0 disables it).
        seed: Seed of the interval.
        alpha: 1 - confidence level of the interval.

    Raises:
        DataError: A labelled chip has no prediction, or shapes differ.
    """
    missing = sorted(set(labels) - set(preds))
    if missing:
        raise DataError(
            f"{len(missing)} labelled chip(s) have no prediction, e.g. {missing[:5]}; "
            "predict every chip of the label set"
        )
    locations = locations or {}
    builder = ReportBuilder(ignore_value)
    for chip_id in sorted(labels):
        builder.add(chip_id, preds[chip_id], labels[chip_id], locations.get(chip_id))
    return builder.build(n_bootstrap=n_bootstrap, seed=seed, alpha=alpha)


def label_chip_ids(label_dir: str | Path) -> list[str]:
    """Chip ids of a labels folder: the stems of its non-hidden ``*.tif`` files, sorted.

    Raises:
        FileNotFoundError: The folder does not exist.
        DataError: It holds no label.
    """
    label_dir = Path(label_dir)
    problem = folder_problem(
        label_dir, "labels folder", "expected a folder of <chip_id>.tif labels"
    )
    if problem:
        raise FileNotFoundError(problem)
    chip_ids = sorted(
        path.stem
        for path in label_dir.glob("*.tif")
        if not path.name.startswith(".") and path.is_file()
    )
    if not chip_ids:
        raise DataError(f"labels folder {label_dir} holds no <chip_id>.tif file")
    return chip_ids


def default_metadata_path(label_dir: str | Path) -> Path | None:
    """``ROOT/<split>_metadata.csv`` beside a ``ROOT/<split>_labels`` folder, if it exists."""
    label_dir = Path(label_dir)
    if not label_dir.name.endswith("_labels"):
        return None
    candidate = label_dir.parent / (label_dir.name[: -len("_labels")] + "_metadata.csv")
    return candidate if candidate.is_file() else None


def load_locations(metadata_csv: str | Path | None) -> dict[str, str]:
    """``chip_id -> location`` from a metadata CSV (empty without a CSV or location column)."""
    if metadata_csv is None:
        return {}
    frame = read_metadata(metadata_csv)
    if "location" not in frame.columns:
        logger.warning("%s has no location column; locations are reported as unknown", metadata_csv)
        return {}
    return dict(zip(frame["chip_id"], frame["location"], strict=True))


def read_label_array(path: Path) -> np.ndarray:
    """Read a label the way the competition's scorer does (tifffile), as stored.

    Raises:
        DataError: It cannot be decoded or is not a 2-D image.
    """
    try:
        label = read_with_tifffile(path)
    except Exception as error:  # tifffile raises several unrelated types for bad files
        raise DataError(
            f"label {path} cannot be read by tifffile ({error}); re-download it"
        ) from None
    if label.ndim != 2:
        raise DataError(f"label {path} has shape {label.shape}, expected a single-band image")
    return label


def score_folders(
    pred_dir: str | Path,
    label_dir: str | Path,
    metadata_csv: str | Path | None = None,
    ignore_value: int | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    progress: bool = True,
    checked_chip_ids: Iterable[str] | None = None,
) -> ScoreReport:
    """Check a predictions folder against the runtime's rules, then score it.

    The expected chips are the stems of the label files. Predictions are read with both PIL
    and tifffile by the checks (they must agree) and scored as read by tifffile, as the
    competition's scorer does.

    Args:
        pred_dir: Folder of ``<chip_id>.tif`` predictions.
        label_dir: Folder of ``<chip_id>.tif`` labels (e.g. ``ROOT/test_labels``).
        metadata_csv: CSV with ``chip_id`` and ``location``; by default
            ``ROOT/<split>_metadata.csv`` beside ``ROOT/<split>_labels`` when it exists.
        ignore_value: Label value left out of the counts (e.g. 255), or ``None`` (the
            competition's behaviour: every nonzero label pixel is cloud).
        n_bootstrap: Resamples of the interval (0 disables it).
        seed: Seed of the interval.
        alpha: 1 - confidence level of the interval.
        progress: Show tqdm bars.
        checked_chip_ids: Chips for which the caller already found the folder free of
            problems (``oncloudn.scoring.checks``); when the labels name exactly these
            chips the checks are not run again.

    Raises:
        SubmissionError: The predictions break a runtime rule (offenders listed).
        DataError: A label cannot be read or its shape differs from its prediction.
    """
    if n_bootstrap < 0:
        raise DataError(f"n_bootstrap must be >= 0 (0 disables the interval), got {n_bootstrap}")
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    problem = folder_problem(
        pred_dir, "predictions folder", "expected a folder of <chip_id>.tif predictions"
    )
    if problem:
        raise FileNotFoundError(problem)
    chip_ids = label_chip_ids(label_dir)
    if checked_chip_ids is None or set(checked_chip_ids) != set(chip_ids):
        assert_valid_predictions(pred_dir, chip_ids, progress=progress)
    if metadata_csv is None:
        metadata_csv = default_metadata_path(label_dir)
        if metadata_csv is not None:
            logger.info("locations from %s", metadata_csv)
    locations = load_locations(metadata_csv)
    builder = ReportBuilder(ignore_value)
    for chip_id in tqdm(chip_ids, desc="scoring", unit="chip", disable=not progress):
        label = read_label_array(label_dir / f"{chip_id}.tif")
        pred = read_with_tifffile(pred_dir / f"{chip_id}.tif")
        builder.add(chip_id, pred, label, locations.get(chip_id))
    report = builder.build(n_bootstrap=n_bootstrap, seed=seed, alpha=alpha)
    report.pred_dir = str(pred_dir)
    report.label_dir = str(label_dir)
    return report

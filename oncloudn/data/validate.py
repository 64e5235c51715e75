"""``check-data``: structural checks and label statistics of one split of a dataset root.

Structural errors make a dataset unusable (missing or corrupt band files, missing labels,
wrong shapes or dtypes, label values other than 0/1/255, CSV problems). Suspicious labels are
plausible label noise worth a look: all cloud, empty while the chip is bright, or
inverted-looking (pixels labelled cloud darker than the clear ones).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio.errors
from tqdm import tqdm

from oncloudn.data.chips import DatasetPaths, check_root, read_chip, read_metadata
from oncloudn.errors import ChipError, DataError
from oncloudn.runtime.bands import CHIP_SIZE, IGNORE_VALUE
from oncloudn.runtime.chipio import list_chip_ids

logger = logging.getLogger(__name__)

METADATA_COLUMNS = ("chip_id", "location", "datetime")
LABEL_VALUES = {0, 1, IGNORE_VALUE}
BRIGHT_VISIBLE = 4000.0  # mean of B02-B04 (DN) above which a pixel counts as very bright
BRIGHT_SHARE = 0.8  # share of very bright pixels that makes an empty label suspicious
ALL_CLOUD = 0.999
MIN_CLASS_SHARE = 0.02  # both classes need this share of valid pixels to compare them
INVERTED_RATIO = 0.8  # cloud median brightness below this fraction of clear's is suspicious
INVERTED_MARGIN = 500.0  # ... and below it by at least this many DN
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
HISTOGRAM_BINS = 10


@dataclass
class SuspiciousLabel:
    """A label that looks wrong.

    Attributes:
        chip_id: The chip.
        reason: ``all cloud``, ``empty while bright`` or ``inverted-looking``, with figures.
    """

    chip_id: str
    reason: str


@dataclass
class DataReport:
    """What ``check_dataset`` found.

    Attributes:
        root: The dataset root.
        split: ``train`` or ``test``.
        n_chips: Chip folders in the split.
        n_checked: Chips read (``max_chips`` may limit it).
        locations: Chip count per location (from the metadata CSV).
        errors: Structural errors, one readable line each (file named).
        notes: Non-fatal observations (e.g. chips not 512 x 512, no CRS, no labels folder).
        nodata: Nodata statistics: mean and max fraction, chips with any nodata.
        cloud_fraction: Cloud-fraction distribution: quantiles, histogram, all-clear and
            all-cloud counts (empty when there are no labels).
        suspicious: Labels that look wrong.
    """

    root: str
    split: str
    n_chips: int = 0
    n_checked: int = 0
    locations: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    nodata: dict = field(default_factory=dict)
    cloud_fraction: dict = field(default_factory=dict)
    suspicious: list[SuspiciousLabel] = field(default_factory=list)

    @property
    def has_structural_errors(self) -> bool:
        """``True`` when the split cannot be used as it is."""
        return bool(self.errors)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of the report."""
        data = asdict(self)
        data["has_structural_errors"] = self.has_structural_errors
        return data

    def format(self) -> str:
        """The report as readable text."""
        lines = [
            f"dataset {self.root} (split {self.split}): {self.n_chips} chips, "
            f"{self.n_checked} checked, {len(self.locations)} location(s)"
        ]
        if self.locations:
            top = sorted(self.locations.items(), key=lambda item: (-item[1], item[0]))
            shown = ", ".join(f"{name} {count}" for name, count in top[:10])
            more = f", ... ({len(top) - 10} more)" if len(top) > 10 else ""
            lines.append(f"  locations: {shown}{more}")
        if self.nodata:
            lines.append(
                f"  nodata: {self.nodata['chips_with_nodata']} chip(s) with nodata pixels, "
                f"mean fraction {self.nodata['mean_fraction']:.3f}, "
                f"max {self.nodata['max_fraction']:.3f}"
            )
        if self.cloud_fraction:
            quantiles = self.cloud_fraction["quantiles"]
            lines.append(
                "  cloud fraction: "
                + ", ".join(f"q{int(float(q) * 100)} {v:.2f}" for q, v in quantiles.items())
                + f"; all clear {self.cloud_fraction['all_clear']}, "
                f"all cloud {self.cloud_fraction['all_cloud']}"
            )
            histogram = self.cloud_fraction["histogram"]
            bars = [
                f"    [{low:.1f}, {high:.1f}{']' if index == len(histogram['counts']) - 1 else ')'}"
                f" {count:5d} {'#' * min(count, 50)}"
                for index, (low, high, count) in enumerate(
                    zip(
                        histogram["edges"][:-1],
                        histogram["edges"][1:],
                        histogram["counts"],
                        strict=True,
                    )
                )
            ]
            lines.extend(bars)
        for note in self.notes:
            lines.append(f"  note: {note}")
        lines.append(f"suspicious labels: {len(self.suspicious)}")
        lines.extend(f"  {item.chip_id}: {item.reason}" for item in self.suspicious)
        lines.append(f"structural errors: {len(self.errors)}")
        lines.extend(f"  {error}" for error in self.errors)
        return "\n".join(lines)


def check_dataset(root: Path, split: str = "train", max_chips: int | None = None) -> DataReport:
    """Check one split of a dataset root: layout, CSV, every chip's files, label statistics.

    Args:
        root: The dataset root (``ROOT/{split}_features`` ...).
        split: ``train`` or ``test``.
        max_chips: Read at most this many chips (the first in sorted order); ``None`` reads
            all. Layout and CSV checks always cover every chip.

    Returns:
        The report; structural problems of chips and CSV are listed in it, not raised.

    Raises:
        DataError: The root is not a dataset root (missing, a file, a features folder...:
            the message says what was found and what is expected), or ``max_chips < 1``.
    """
    paths = DatasetPaths(Path(root), split)
    check_root(paths)
    if max_chips is not None and max_chips < 1:
        raise DataError(f"max_chips must be >= 1 (or None for every chip), got {max_chips}")
    report = DataReport(root=str(paths.root), split=split)
    chip_ids = list_chip_ids(str(paths.features_dir))
    report.n_chips = len(chip_ids)
    if not chip_ids:
        report.errors.append(f"{paths.features_dir} holds no chip folders")
    locations = _check_metadata(paths, chip_ids, report)
    report.locations = dict(sorted(Counter(locations.values()).items()))
    with_labels = paths.labels_dir.is_dir()
    if not with_labels:
        report.notes.append(
            f"labels folder {paths.labels_dir} does not exist: an unlabelled split, no label "
            "statistics (it serves distillation and prediction; `train` needs labels)"
        )
    selected = chip_ids if max_chips is None else chip_ids[:max_chips]
    _check_chips(paths, selected, with_labels, report)
    logger.info(
        "checked %d/%d chips of %s: %d structural error(s), %d suspicious label(s)",
        report.n_checked,
        report.n_chips,
        paths.features_dir,
        len(report.errors),
        len(report.suspicious),
    )
    return report


def _check_metadata(paths: DatasetPaths, chip_ids: list[str], report: DataReport) -> dict:
    """Check the metadata CSV against the chip folders; returns ``{chip_id: location}``."""
    unknown = {chip_id: "unknown" for chip_id in chip_ids}
    if not paths.metadata_path.exists():
        report.errors.append(
            f"metadata CSV {paths.metadata_path} does not exist; expected columns "
            f"{', '.join(METADATA_COLUMNS)}"
        )
        return unknown
    try:
        metadata = read_metadata(paths.metadata_path, METADATA_COLUMNS)
    except DataError as error:
        report.errors.append(str(error))
        return unknown
    listed = set(metadata["chip_id"])
    without_folder = sorted(listed - set(chip_ids))
    if without_folder:
        report.errors.append(
            f"{paths.metadata_path}: {len(without_folder)} chip(s) listed without a folder in "
            f"{paths.features_dir}, e.g. {without_folder[:5]}"
        )
    without_row = sorted(set(chip_ids) - listed)
    if without_row:
        report.errors.append(
            f"{paths.metadata_path}: {len(without_row)} chip folder(s) have no row, "
            f"e.g. {without_row[:5]}"
        )
    empty_location = sorted(metadata.loc[metadata["location"] == "", "chip_id"])
    if empty_location:
        report.notes.append(
            f"{len(empty_location)} chip(s) have an empty location, e.g. {empty_location[:5]}"
        )
    known = dict(zip(metadata["chip_id"], metadata["location"].replace("", "unknown"), strict=True))
    return {chip_id: known.get(chip_id, "unknown") for chip_id in chip_ids}


def _check_chips(
    paths: DatasetPaths, chip_ids: list[str], with_labels: bool, report: DataReport
) -> None:
    """Read every chip; fill errors, notes, nodata and cloud statistics and suspicions."""
    nodata_fractions, cloud_fractions = [], []
    shapes: Counter = Counter()
    no_crs = []
    for chip_id in tqdm(chip_ids, desc=f"check {paths.split}", unit="chip", leave=False):
        try:
            chip = read_chip(paths, chip_id, with_label=with_labels)
        except ChipError as error:
            report.errors.append(str(error))
            continue
        except (rasterio.errors.RasterioError, OSError, ValueError) as error:
            report.errors.append(f"chip {chip_id!r}: cannot be read ({error})")
            continue
        report.n_checked += 1
        shapes[chip.bands.shape[1:]] += 1
        if chip.crs is None:
            no_crs.append(chip_id)
        nodata_fractions.append(float(chip.nodata.mean()))
        if chip.label is None:
            continue
        values = set(np.unique(chip.label).tolist())
        if not values <= LABEL_VALUES:
            report.errors.append(
                f"chip {chip_id!r}: label has values {sorted(values - LABEL_VALUES)} outside "
                f"0/1/255 ({paths.label_path(chip_id)})"
            )
            continue
        fraction, reason = _label_statistics(chip.bands, chip.label, chip.nodata)
        if fraction is not None:
            cloud_fractions.append(fraction)
        if reason:
            report.suspicious.append(SuspiciousLabel(chip_id, reason))
    odd_shapes = {shape: n for shape, n in shapes.items() if shape != (CHIP_SIZE, CHIP_SIZE)}
    if odd_shapes:
        listed = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sorted(odd_shapes.items()))
        report.notes.append(f"chips not {CHIP_SIZE}x{CHIP_SIZE} (the competition's size): {listed}")
    if no_crs:
        report.notes.append(f"{len(no_crs)} chip(s) have no CRS, e.g. {no_crs[:5]}")
    if nodata_fractions:
        array = np.asarray(nodata_fractions)
        report.nodata = {
            "mean_fraction": float(array.mean()),
            "max_fraction": float(array.max()),
            "chips_with_nodata": int((array > 0).sum()),
            "chips_all_nodata": int((array >= 1.0).sum()),
        }
    if cloud_fractions:
        report.cloud_fraction = _distribution(np.asarray(cloud_fractions))


def _label_statistics(
    bands: np.ndarray, label: np.ndarray, nodata: np.ndarray
) -> tuple[float | None, str]:
    """Cloud fraction of valid pixels and a reason when the label looks wrong (or ``''``)."""
    valid = ~nodata & (label != IGNORE_VALUE)
    n_valid = int(valid.sum())
    if n_valid == 0:
        return None, ""
    cloud = (label == 1) & valid
    fraction = float(cloud.sum()) / n_valid
    visible = bands[:3].astype(np.float32).mean(axis=0)
    if fraction >= ALL_CLOUD:
        return fraction, f"all cloud (median visible {np.median(visible[valid]):.0f})"
    bright_share = float((visible[valid] > BRIGHT_VISIBLE).mean())
    if fraction <= 1.0 - ALL_CLOUD and bright_share >= BRIGHT_SHARE:
        return fraction, (
            f"empty while bright ({bright_share:.0%} of valid pixels have visible mean > "
            f"{BRIGHT_VISIBLE:.0f})"
        )
    clear = ~cloud & valid
    if min(fraction, 1.0 - fraction) >= MIN_CLASS_SHARE:
        cloud_median = float(np.median(visible[cloud]))
        clear_median = float(np.median(visible[clear]))
        if (
            cloud_median < INVERTED_RATIO * clear_median
            and clear_median - cloud_median > INVERTED_MARGIN
        ):
            return fraction, (
                f"inverted-looking (cloud pixels' median visible {cloud_median:.0f} < clear "
                f"pixels' {clear_median:.0f})"
            )
    return fraction, ""


def _distribution(fractions: np.ndarray) -> dict:
    """Quantiles, histogram and extreme counts of per-chip cloud fractions."""
    counts, edges = np.histogram(fractions, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return {
        "quantiles": {str(q): float(np.quantile(fractions, q)) for q in QUANTILES},
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        "mean": float(fractions.mean()),
        "all_clear": int((fractions <= 1.0 - ALL_CLOUD).sum()),
        "all_cloud": int((fractions >= ALL_CLOUD).sum()),
    }

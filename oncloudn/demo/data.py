"""The demo's data: a labelled sample root, an unlabelled one, and the student's folds.

The student learns from the labelled training chips and from extra *unlabelled* chips that
only the teacher labels (the distillation recipe). The unlabelled root is generated with a
seed derived from the demo's seed and its label folder removed. Its chips join the teacher's
location-grouped folds by location; those at the validation fold's locations are put on an
exclude list, so that the student never sees a validation location, not even unlabelled.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from oncloudn.data.chips import DatasetPaths, list_chips
from oncloudn.data.folds import load_folds, save_folds
from oncloudn.data.sample import generate_sample_dataset
from oncloudn.data.validate import check_dataset
from oncloudn.errors import DataError
from oncloudn.runtime.atomic import atomic_write_text

logger = logging.getLogger(__name__)

# The unlabelled chips' generator seed is the demo's seed plus this (disjoint scenes).
UNLABELLED_SEED_OFFSET = 1000


@dataclass(frozen=True)
class DemoData:
    """Where the demo's chips are.

    Attributes:
        root: The labelled sample root (train and test splits).
        unlabelled_root: Extra training chips without labels (``None``: none).
    """

    root: Path
    unlabelled_root: Path | None


def generate_demo_data(
    data_dir: Path, chips: int, test_chips: int, unlabelled_chips: int, seed: int
) -> DemoData:
    """Generate and check the labelled root, then the unlabelled one.

    Args:
        data_dir: Folder of both roots (``labelled/`` and ``unlabelled/``).
        chips: Labelled training chips.
        test_chips: Test chips (the split the submissions are scored on).
        unlabelled_chips: Unlabelled training chips (0: none).
        seed: The demo's seed.

    Raises:
        DataError: The generated labelled root fails ``check-data``.
    """
    root = generate_sample_dataset(
        data_dir / "labelled", chips=chips, test_chips=test_chips, seed=seed, force=True
    )
    report = check_dataset(root, split="train")
    logger.info("demo: check-data\n%s", report.format())
    if report.has_structural_errors:
        raise DataError(f"generated sample data in {root} failed check-data")
    if unlabelled_chips < 1:
        return DemoData(root, None)
    unlabelled = generate_sample_dataset(
        data_dir / "unlabelled",
        chips=unlabelled_chips,
        test_chips=0,
        seed=seed + UNLABELLED_SEED_OFFSET,
        force=True,
    )
    shutil.rmtree(unlabelled / "train_labels")
    (unlabelled / "test_features").rmdir()
    (unlabelled / "test_labels").rmdir()
    (unlabelled / "test_metadata.csv").unlink()
    return DemoData(root, unlabelled)


def student_folds(
    teacher_folds: Path, data: DemoData, val_fold: int, out_dir: Path
) -> tuple[Path, list[str]]:
    """The student's folds file and exclude lists, consistent with the teacher's folds.

    Every labelled chip keeps the teacher's fold; an unlabelled chip takes the fold of its
    location. Unlabelled chips at the validation fold's locations (or at a location the
    teacher's folds do not know) go on an exclude list; no labelled chip is excluded. An
    unlabelled chip whose id a labelled chip already has is left out (the catalog reads the
    labelled one).

    Args:
        teacher_folds: The teacher's ``folds.csv``.
        data: The demo's roots.
        val_fold: The validation fold of both runs.
        out_dir: Where ``folds.csv`` and ``exclude_unlabelled.txt`` are written.

    Returns:
        ``(folds file, exclude lists)`` for ``data.folds_file`` / ``data.exclude_lists``.
    """
    folds = load_folds(teacher_folds)
    if data.unlabelled_root is None:
        return teacher_folds, []
    fold_of = folds.drop_duplicates("location").set_index("location")["fold"]
    extra = list_chips(DatasetPaths(data.unlabelled_root, "train"))[["chip_id", "location"]]
    extra = extra[~extra["chip_id"].isin(set(folds["chip_id"]))].copy()
    extra["fold"] = extra["location"].map(fold_of).fillna(val_fold).astype(int)
    excluded = sorted(extra.loc[extra["fold"] == val_fold, "chip_id"])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_folds(pd.concat([folds, extra], ignore_index=True), out_dir / "folds.csv")
    exclude = out_dir / "exclude_unlabelled.txt"
    header = "# unlabelled chips at the validation fold's locations (never trained on)\n"
    atomic_write_text(exclude, header + "".join(f"{chip}\n" for chip in excluded))
    logger.info(
        "demo: %d unlabelled chips for the student, %d at validation locations excluded",
        len(extra) - len(excluded),
        len(excluded),
    )
    return path, [str(exclude)]

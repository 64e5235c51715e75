"""Location-grouped cross-validation folds and the folds file (``chip_id,location,fold``).

No location appears in two folds, so a fold's score estimates how a model does on places it
never saw (the test chips are reported to come from other locations). Folds are balanced by
chip count: locations are taken largest first (ties broken by a seeded shuffle) and each goes
to the fold with the fewest chips so far. The same chips and seed always give the same folds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from oncloudn.data.chips import duplicate_chip_ids, read_str_csv
from oncloudn.errors import DataError
from oncloudn.hashing import sha256_file
from oncloudn.runtime.atomic import atomic_path

FOLD_COLUMNS = ("chip_id", "location", "fold")


def assign_folds(chips: pd.DataFrame, n_folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """Assign every chip to one of ``n_folds`` location-grouped, size-balanced folds.

    Args:
        chips: A frame with columns ``chip_id`` and ``location`` (e.g. from ``list_chips``).
        n_folds: Number of folds (at least 2).
        seed: Breaks ties between equally large locations; same seed, same folds.

    Returns:
        A frame ``chip_id, location, fold`` (fold in ``0..n_folds-1``), sorted by ``chip_id``.

    Raises:
        DataError: Missing columns, duplicate chip ids, ``n_folds < 2``, or fewer locations
            than folds.
    """
    missing = [column for column in ("chip_id", "location") if column not in chips.columns]
    if missing:
        raise DataError(
            f"assign_folds needs columns chip_id and location; missing {missing} "
            f"(found {list(chips.columns)})"
        )
    if n_folds < 2:
        raise DataError(f"n_folds must be at least 2 (got {n_folds})")
    frame = chips[["chip_id", "location"]].astype(str).reset_index(drop=True)
    duplicates = duplicate_chip_ids(frame)
    if duplicates:
        raise DataError(f"duplicate chip ids cannot be split into folds, e.g. {duplicates}")
    sizes = frame.groupby("location").size()
    if len(sizes) < n_folds:
        raise DataError(
            f"cannot make {n_folds} location-grouped folds from {len(sizes)} location(s) "
            f"({len(frame)} chips); use n_folds <= {len(sizes)} or add locations"
        )
    rng = np.random.default_rng(seed)
    names = sorted(sizes.index)
    tie_break = dict(zip(names, rng.permutation(len(names)), strict=True))
    order = sorted(names, key=lambda name: (-int(sizes[name]), tie_break[name]))
    fold_sizes = [0] * n_folds
    fold_of: dict[str, int] = {}
    for name in order:
        fold = min(range(n_folds), key=lambda index: (fold_sizes[index], index))
        fold_of[name] = fold
        fold_sizes[fold] += int(sizes[name])
    frame["fold"] = frame["location"].map(fold_of).astype(int)
    return frame.sort_values("chip_id").reset_index(drop=True)


def save_folds(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a folds frame as CSV ``chip_id,location,fold`` atomically; returns the path."""
    path = Path(path)
    _check_columns(frame, path)
    with atomic_path(path) as temp, open(temp, "w", newline="", encoding="utf-8") as stream:
        frame[list(FOLD_COLUMNS)].to_csv(stream, index=False, lineterminator="\n")
    return path


def load_folds(path: str | Path) -> pd.DataFrame:
    """Read a folds file: ``chip_id`` and ``location`` as ``str``, ``fold`` as ``int``.

    Raises:
        FileNotFoundError: The file does not exist.
        DataError: It is not a valid folds CSV (columns, fold values, duplicate chips).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"folds file {path} does not exist; make one with save_folds")
    frame = read_str_csv(path, f"folds file {path}")
    _check_columns(frame, path)
    try:
        frame["fold"] = frame["fold"].astype(int)
    except ValueError:
        bad = [value for value in frame["fold"] if not value.lstrip("-").isdigit()][:5]
        raise DataError(f"folds file {path}: fold values must be integers, found {bad}") from None
    if (frame["fold"] < 0).any():
        raise DataError(f"folds file {path}: fold values must be >= 0")
    duplicates = duplicate_chip_ids(frame)
    if duplicates:
        raise DataError(f"folds file {path}: chip ids listed twice, e.g. {duplicates}")
    return frame[list(FOLD_COLUMNS)]


def folds_for_chips(
    frame: pd.DataFrame, chips: pd.DataFrame, path: str | Path, where: str, fix: str
) -> pd.DataFrame:
    """The rows of a folds frame for ``chips`` (a frame with ``chip_id``), in order.

    Args:
        frame: A folds frame (from :func:`load_folds`).
        chips: The chips that need a fold.
        path: The folds file (named in the error).
        where: Where the chips come from (named in the error).
        fix: What to do when chips lack a fold.

    Raises:
        DataError: A chip has no fold.
    """
    missing = sorted(set(chips["chip_id"]) - set(frame["chip_id"]))
    if missing:
        raise DataError(
            f"folds file {path} has no fold for {len(missing)} chip(s) of {where}, "
            f"e.g. {missing[:3]}; {fix}"
        )
    return frame[frame["chip_id"].isin(set(chips["chip_id"]))].reset_index(drop=True)


def folds_hash(path: str | Path) -> str:
    """SHA-256 hex digest of a folds file's bytes (recorded in model folders' provenance)."""
    return sha256_file(path)


def _check_columns(frame: pd.DataFrame, path: Path) -> None:
    missing = [column for column in FOLD_COLUMNS if column not in frame.columns]
    if missing:
        raise DataError(
            f"folds file {path}: missing column(s) {missing}; found {list(frame.columns)}. "
            "Expected chip_id,location,fold"
        )

"""Location-grouped cross-validation folds and the folds file (``chip_id,location,fold``).

No location appears in two folds, so a fold's score estimates how a model does on places it
never saw (the test chips are reported to come from other locations). Folds are balanced by
chip count: locations are taken largest first (ties broken by a seeded shuffle) and each goes
to the fold with the fewest chips so far. The same chips and seed always give the same folds.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from oncloudn.errors import DataError

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
    if frame["chip_id"].duplicated().any():
        duplicates = sorted(frame.loc[frame["chip_id"].duplicated(), "chip_id"].unique())[:5]
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
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
            frame[list(FOLD_COLUMNS)].to_csv(stream, index=False, lineterminator="\n")
        os.replace(temp_name, path)
    finally:
        if os.path.exists(temp_name):
            os.remove(temp_name)
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
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"folds file {path}: cannot be read as CSV ({error})") from None
    _check_columns(frame, path)
    try:
        frame["fold"] = frame["fold"].astype(int)
    except ValueError:
        bad = [value for value in frame["fold"] if not value.lstrip("-").isdigit()][:5]
        raise DataError(f"folds file {path}: fold values must be integers, found {bad}") from None
    if (frame["fold"] < 0).any():
        raise DataError(f"folds file {path}: fold values must be >= 0")
    if frame["chip_id"].duplicated().any():
        duplicates = sorted(frame.loc[frame["chip_id"].duplicated(), "chip_id"].unique())[:5]
        raise DataError(f"folds file {path}: chip ids listed twice, e.g. {duplicates}")
    return frame[list(FOLD_COLUMNS)]


def folds_hash(path: str | Path) -> str:
    """SHA-256 hex digest of a folds file's bytes (recorded in model folders' provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_columns(frame: pd.DataFrame, path: Path) -> None:
    missing = [column for column in FOLD_COLUMNS if column not in frame.columns]
    if missing:
        raise DataError(
            f"folds file {path}: missing column(s) {missing}; found {list(frame.columns)}. "
            "Expected chip_id,location,fold"
        )

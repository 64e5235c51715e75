"""A local leaderboard: scored runs in a SQLite database, ranked by pooled Jaccard.

The database defaults to ``$ONCLOUDN_LEADERBOARD`` or ``~/.oncloudn/leaderboard.sqlite``;
every function takes an explicit path. ``run-local`` writes ``run.json`` (zip hash, manifest
summary, timings) beside its predictions folder; :func:`load_run_info` finds it there so a
recorded score knows what produced it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from oncloudn.errors import DataError
from oncloudn.scoring.report import ScoreReport

logger = logging.getLogger(__name__)

ENV_VAR = "ONCLOUDN_LEADERBOARD"
RUN_INFO_NAME = "run.json"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    name TEXT NOT NULL,
    zip_sha256 TEXT,
    manifest TEXT,
    jaccard REAL,
    ci_low REAL,
    ci_high REAL,
    precision REAL,
    recall REAL,
    n_chips INTEGER NOT NULL,
    per_location TEXT NOT NULL,
    runtime_s REAL,
    chips_per_s REAL,
    pred_dir TEXT,
    label_dir TEXT,
    ignore_value INTEGER,
    n_bootstrap INTEGER,
    seed INTEGER,
    info TEXT
)
"""

TABLE_COLUMNS = [
    "rank",
    "id",
    "time",
    "name",
    "jaccard",
    "ci_low",
    "ci_high",
    "precision",
    "recall",
    "n_chips",
    "runtime_s",
    "chips_per_s",
    "zip_sha256",
    "pred_dir",
]

# Keys of ``info`` stored in their own columns; everything else goes to the ``info`` JSON.
_KNOWN_KEYS = {"name", "zip_sha256", "manifest", "runtime_s", "wall_s", "chips_per_s", "pred_dir"}


def default_db_path() -> Path:
    """``$ONCLOUDN_LEADERBOARD`` if set, else ``~/.oncloudn/leaderboard.sqlite``."""
    value = os.environ.get(ENV_VAR)
    return Path(value).expanduser() if value else Path.home() / ".oncloudn" / "leaderboard.sqlite"


def run_info_path(pred_dir: str | Path) -> Path:
    """Where ``run-local`` writes ``run.json`` for a predictions folder: beside it."""
    return Path(pred_dir).resolve().parent / RUN_INFO_NAME


def load_run_info(pred_dir: str | Path) -> dict:
    """The ``run.json`` that ``run-local`` writes beside a predictions folder, or ``{}``.

    Raises:
        DataError: The file exists but is not a JSON object.
    """
    path = run_info_path(pred_dir)
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}); fix or remove it") from None
    if not isinstance(info, dict):
        raise DataError(f"{path} must hold a JSON object, got {type(info).__name__}")
    logger.info("run info from %s", path)
    return info


def _number(value: object) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _connect(db_path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    connection.row_factory = sqlite3.Row
    return connection


def _open_for_reading(db_path: Path) -> sqlite3.Connection:
    """A connection that reads the board without creating it.

    Read-only, unless a rollback journal lies beside the database: a writer killed
    mid-transaction leaves a "hot" journal that only a read-write connection can roll back
    (a read-only one fails with "attempt to write a readonly database"), so the board is
    then opened read-write (when the file and its folder are writable) and SQLite rolls the
    interrupted transaction back on the first read.
    """
    journal = Path(f"{db_path}-journal")
    writable = os.access(db_path, os.W_OK) and os.access(db_path.parent, os.W_OK)
    mode = "rw" if journal.exists() and writable else "ro"
    return sqlite3.connect(f"file:{db_path}?mode={mode}", uri=True, timeout=30)


def record_run(db_path: str | Path, report: ScoreReport, info: dict | None = None) -> int:
    """Store one scored run, atomically (a single transaction).

    Args:
        db_path: The SQLite file (created with its folder when absent).
        report: The run's scores.
        info: What produced it: ``name``, ``zip_sha256``, ``manifest`` (summary dict),
            ``wall_s`` or ``runtime_s``, ``chips_per_s``, ``pred_dir`` (e.g. ``run.json``
            merged with command-line values); other keys are kept as JSON.

    Returns:
        The new run's id.
    """
    info = dict(info or {})
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    pred_dir = info.get("pred_dir") or report.pred_dir
    if info.get("n_chips") is not None and int(info["n_chips"]) != report.n_chips:
        logger.warning("run info says %s chips but %d were scored", info["n_chips"], report.n_chips)
    manifest = info.get("manifest")
    row = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "name": str(info.get("name") or _default_name(pred_dir)),
        "zip_sha256": info.get("zip_sha256"),
        "manifest": None if manifest is None else json.dumps(manifest, sort_keys=True),
        "jaccard": _number(report.jaccard),
        "ci_low": _number(report.ci_low),
        "ci_high": _number(report.ci_high),
        "precision": _number(report.precision),
        "recall": _number(report.recall),
        "n_chips": report.n_chips,
        "per_location": json.dumps(
            report.to_dict()["per_location"], sort_keys=True, allow_nan=False
        ),
        "runtime_s": _number(info.get("runtime_s", info.get("wall_s"))),
        "chips_per_s": _number(info.get("chips_per_s")),
        "pred_dir": None if pred_dir is None else str(pred_dir),
        "label_dir": report.label_dir,
        "ignore_value": report.ignore_value,
        "n_bootstrap": report.n_bootstrap,
        "seed": report.seed,
        "info": json.dumps(
            {key: value for key, value in info.items() if key not in _KNOWN_KEYS},
            sort_keys=True,
            default=str,
        ),
    }
    columns = ", ".join(row)
    placeholders = ", ".join(f":{key}" for key in row)
    with closing(_connect(db_path)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute(_SCHEMA)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            cursor = connection.execute(
                f"INSERT INTO runs ({columns}) VALUES ({placeholders})", row
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    logger.info("recorded run %d (%s) in %s", cursor.lastrowid, row["name"], db_path)
    return int(cursor.lastrowid)


def _default_name(pred_dir: str | Path | None) -> str:
    if pred_dir is None:
        return "unnamed"
    path = Path(pred_dir).resolve()
    return path.parent.name if path.name == "predictions" and path.parent.name else path.name


def _has_runs_table(connection: sqlite3.Connection) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'"
    return connection.execute(query).fetchone() is not None


def leaderboard(db_path: str | Path, limit: int | None = None) -> pd.DataFrame:
    """Recorded runs ranked by Jaccard (best first; ties by earlier time).

    Args:
        db_path: The SQLite file; a missing file gives an empty table (nothing is created).
        limit: Keep only the best ``limit`` runs.

    Returns:
        A frame with ``TABLE_COLUMNS``; ``rank`` starts at 1.
    """
    db_path = Path(db_path)
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}")
    if not db_path.is_file():
        return pd.DataFrame(columns=TABLE_COLUMNS)
    with closing(_open_for_reading(db_path)) as connection:
        if not _has_runs_table(connection):
            return pd.DataFrame(columns=TABLE_COLUMNS)
        query = (
            f"SELECT {', '.join(TABLE_COLUMNS[1:])} FROM runs "
            "ORDER BY jaccard IS NULL, jaccard DESC, time, id"
        )
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        frame = pd.read_sql_query(query, connection)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame


def get_run(db_path: str | Path, run_id: int) -> dict:
    """One recorded run with its JSON fields (manifest, per_location, info) decoded.

    Raises:
        DataError: No run has this id.
    """
    db_path = Path(db_path)
    if not db_path.is_file():
        raise DataError(f"leaderboard {db_path} does not exist")
    with closing(_open_for_reading(db_path)) as connection:
        connection.row_factory = sqlite3.Row
        row = (
            connection.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if _has_runs_table(connection)
            else None
        )
    if row is None:
        raise DataError(f"no run with id {run_id} in {db_path}")
    run = dict(row)
    for key in ("manifest", "per_location", "info"):
        run[key] = None if run[key] is None else json.loads(run[key])
    return run

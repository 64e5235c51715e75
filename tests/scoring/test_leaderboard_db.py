"""Local leaderboard: record + table roundtrip, run.json merged, reference scores."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from oncloudn.errors import DataError
from oncloudn.scoring.leaderboard import (
    default_db_path,
    get_run,
    leaderboard,
    load_run_info,
    record_run,
)
from oncloudn.scoring.reference import REFERENCE_SOURCE, reference_frame
from oncloudn.scoring.report import score_arrays


def make_report(quality: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = {f"c{i}": (rng.random((32, 32)) < 0.5).astype(np.uint8) for i in range(8)}
    preds = {
        chip_id: np.where(rng.random(label.shape) < quality, label, 1 - label)
        for chip_id, label in labels.items()
    }
    locations = {chip_id: f"L{i % 2}" for i, chip_id in enumerate(labels)}
    return score_arrays(preds, labels, locations, n_bootstrap=50)


def test_record_and_rank_roundtrip(tmp_path):
    db = tmp_path / "sub" / "board.sqlite"
    run_dir = tmp_path / "run"
    (run_dir / "predictions").mkdir(parents=True)
    run_json = {
        "zip_sha256": "ab" * 32,
        "manifest": {"name": "unet", "tta": ["identity", "hflip"]},
        "wall_s": 12.5,
        "chips_per_s": 0.64,
        "n_chips": 8,
        "name": "from-run-json",
        "gpu": "none",
    }
    (run_dir / "run.json").write_text(json.dumps(run_json))
    info = load_run_info(run_dir / "predictions")
    assert info == run_json

    weak, strong = make_report(0.7), make_report(0.95)
    weak_id = record_run(db, weak, {**info, "pred_dir": str(run_dir / "predictions")})
    strong_id = record_run(db, strong, {"name": "strong"})
    assert weak_id != strong_id

    table = leaderboard(db)
    assert list(table["name"]) == ["strong", "from-run-json"]
    assert list(table["rank"]) == [1, 2]
    assert table["jaccard"].iloc[0] == pytest.approx(strong.jaccard)
    assert table["jaccard"].iloc[1] == pytest.approx(weak.jaccard)
    assert list(leaderboard(db, limit=1)["name"]) == ["strong"]

    run = get_run(db, weak_id)
    assert run["zip_sha256"] == "ab" * 32
    assert run["manifest"] == run_json["manifest"]
    assert run["runtime_s"] == 12.5 and run["chips_per_s"] == 0.64
    assert run["ci_low"] == pytest.approx(weak.ci_low)
    assert run["info"] == {"gpu": "none", "n_chips": 8}
    assert {row["location"] for row in run["per_location"]} == {"L0", "L1"}
    assert run["time"].endswith("+00:00")


def test_record_is_atomic(tmp_path):
    db = tmp_path / "board.sqlite"
    # a value SQLite cannot bind fails the INSERT after CREATE TABLE ran in the same transaction
    with pytest.raises(sqlite3.Error):
        record_run(db, make_report(0.9), {"name": "bad", "zip_sha256": object()})
    with sqlite3.connect(db) as connection:
        tables = connection.execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == []  # rolled back: not even the table was created
    record_run(db, make_report(0.9), {"name": "ok"})
    with pytest.raises(sqlite3.Error):
        record_run(db, make_report(0.9), {"name": "bad", "zip_sha256": object()})
    assert list(leaderboard(db)["name"]) == ["ok"]


def test_missing_db_and_bad_run_json(tmp_path, monkeypatch):
    assert leaderboard(tmp_path / "none.sqlite").empty
    assert not (tmp_path / "none.sqlite").exists()
    assert load_run_info(tmp_path / "predictions") == {}
    (tmp_path / "run.json").write_text("{broken")
    with pytest.raises(DataError, match="run.json"):
        load_run_info(tmp_path / "predictions")
    monkeypatch.setenv("ONCLOUDN_LEADERBOARD", str(tmp_path / "env.sqlite"))
    assert default_db_path() == tmp_path / "env.sqlite"


def test_reference_scores():
    frame = reference_frame()
    assert frame["jaccard"].iloc[0] == 0.8974
    assert set(frame["source"]) == {REFERENCE_SOURCE}
    assert "private leaderboard" in REFERENCE_SOURCE
    assert {0.8974, 0.8972, 0.8961, 0.882, 0.817, 0.652} == set(frame["jaccard"])

"""A kill during a leaderboard write must not leave a database ``oncloudn leaderboard`` cannot read.

The writer below is killed (SIGKILL) in the middle of a transaction that has already spilled
pages into the database file: a hot rollback journal is left behind, which a read-only
connection cannot roll back ("attempt to write a readonly database").
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from test_leaderboard_db import make_report

from oncloudn.cli.main import main
from oncloudn.scoring.leaderboard import get_run, leaderboard, record_run

KILLED_WRITER = """
import os, signal, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA cache_size = 1")  # spill dirty pages into the file early
connection.execute("BEGIN IMMEDIATE")
for index in range(200):
    connection.execute(
        "INSERT INTO runs (time, name, n_chips, per_location) VALUES (?, ?, 1, '{}')",
        ("2026-01-01", "x" * 2000 + str(index)),
    )
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_during_record_leaves_a_readable_board(tmp_path: Path, capsys) -> None:
    db = tmp_path / "board.sqlite"
    run_id = record_run(db, make_report(0.9), {"name": "before-the-kill"})
    writer = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(db)], check=False
    )
    assert writer.returncode == -9
    journal = Path(f"{db}-journal")
    assert journal.is_file() and journal.stat().st_size > 0  # the hot journal is there
    board = leaderboard(db)
    assert list(board["name"]) == ["before-the-kill"]
    assert get_run(db, run_id)["name"] == "before-the-kill"
    assert main(["leaderboard", "--db", str(db)]) == 0
    assert "before-the-kill" in capsys.readouterr().out
    # The next record goes on top of the rolled-back database.
    record_run(db, make_report(0.8, seed=1), {"name": "after"})
    assert sorted(leaderboard(db)["name"]) == ["after", "before-the-kill"]

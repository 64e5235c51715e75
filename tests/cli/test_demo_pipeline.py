"""The demo runs the whole pipeline: sample data -> train -> pack -> run-local -> score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oncloudn.cli.main import main
from oncloudn.scoring.leaderboard import leaderboard


def test_demo_runs_every_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    code = main(["-q", "demo", str(out), "--chips", "6", "--test-chips", "2", "--epochs", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "threshold" in printed and "tiny-unet" in printed
    table = leaderboard(out / "leaderboard.sqlite")
    assert len(table) == 2
    assert table["jaccard"].between(0.0, 1.0).all()
    for name in ("threshold", "tiny-unet"):
        run = json.loads((out / "runs" / name / "run.json").read_text())
        assert run["n_chips"] == 2
        predictions = sorted(p.name for p in (out / "runs" / name / "predictions").iterdir())
        test_chips = sorted(p.name for p in (out / "data" / "test_features").iterdir())
        assert predictions == [f"{chip}.tif" for chip in test_chips]


def test_demo_refuses_a_non_empty_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["demo", str(tmp_path), "--no-train"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "precious"

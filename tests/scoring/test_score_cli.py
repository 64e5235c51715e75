"""The `score` and `leaderboard` commands: exit codes and what they print."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tifffile

from oncloudn.cli.main import main
from oncloudn.runtime.chipio import write_mask


def write_predictions(toy_root: Path, out: Path) -> Path:
    pred_dir = out / "predictions"
    for path in sorted((toy_root / "train_labels").glob("*.tif")):
        label = tifffile.imread(path)
        label[:64] = 1 - label[:64]
        write_mask(str(pred_dir / path.name), label)
    return pred_dir


def test_score_prints_jaccard_records_and_ranks(toy_root, tmp_path, capsys):
    pred_dir = write_predictions(toy_root, tmp_path / "run")
    (tmp_path / "run" / "run.json").write_text(
        json.dumps({"name": "toy-run", "zip_sha256": "cd" * 32, "wall_s": 3.0, "n_chips": 6})
    )
    db = tmp_path / "board.sqlite"
    out_json = tmp_path / "report.json"
    code = main(
        [
            "score",
            str(pred_dir),
            str(toy_root / "train_labels"),
            "--bootstrap",
            "100",
            "--worst",
            "2",
            "--json",
            str(out_json),
            "--record",
            "--db",
            str(db),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    jaccard = json.loads(out_json.read_text())["jaccard"]
    assert 0 < jaccard < 1
    assert f"Jaccard (pooled over 6 chips): {jaccard:.4f}" in printed
    assert "95% CI" in printed and "Loc B" in printed and "Worst 2 chips" in printed
    assert "recorded as run #1" in printed

    assert main(["leaderboard", "--db", str(db), "--reference"]) == 0
    board = capsys.readouterr().out
    assert "toy-run" in board and f"{jaccard:.4f}" in board
    assert "0.8974" in board and "0.6520" in board
    assert "private leaderboard (reference)" in board and "not comparable 1:1" in board


def test_score_refuses_invalid_predictions(toy_root, tmp_path, capsys):
    pred_dir = write_predictions(toy_root, tmp_path / "run")
    (pred_dir / "abcd.tif").unlink()
    (pred_dir / ".tmp-x.tif").write_bytes(b"")
    code = main(["score", str(pred_dir), str(toy_root / "train_labels")])
    captured = capsys.readouterr()
    assert code == 2
    assert "abcd.tif: missing" in captured.err and ".tmp-x.tif: hidden file" in captured.err
    assert "Jaccard" not in captured.out


def test_leaderboard_empty_and_reference_only(tmp_path, capsys):
    db = tmp_path / "none.sqlite"
    assert main(["leaderboard", "--db", str(db)]) == 0
    assert "no runs recorded" in capsys.readouterr().out
    assert main(["leaderboard", "--db", str(db), "--reference"]) == 0
    board = capsys.readouterr().out
    assert board.count("private leaderboard (reference)") == 6


def test_score_rejects_negative_bootstrap_before_reading(toy_root, tmp_path, capsys):
    pred_dir = write_predictions(toy_root, tmp_path / "run")
    with pytest.raises(SystemExit) as stop:  # refused when the command line is parsed
        main(["score", str(pred_dir), str(toy_root / "train_labels"), "--bootstrap", "-1"])
    captured = capsys.readouterr()
    assert stop.value.code == 2 and "--bootstrap: must be an integer >= 0" in captured.err
    assert "checked" not in captured.err

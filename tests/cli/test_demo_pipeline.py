"""The demo runs the whole recipe: sample data -> teacher -> student -> pack -> run -> score."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from oncloudn.cli.main import main
from oncloudn.data.folds import load_folds
from oncloudn.demo.report import network_parameters
from oncloudn.scoring.leaderboard import leaderboard

NAMES = ("threshold", "teacher", "student")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("demo") / "run"
    args = ["-q", "demo", str(out), "--chips", "6", "--test-chips", "2"]
    args += ["--unlabelled-chips", "3", "--quick", "--seed", "3"]
    return out, main(args)


def test_demo_packs_runs_and_scores_rule_teacher_and_student(
    quick_demo: tuple[Path, int],
) -> None:
    out, code = quick_demo
    assert code == 0
    table = leaderboard(out / "leaderboard.sqlite")
    assert len(table) == 3
    assert table["jaccard"].between(0.0, 1.0).all()
    test_chips = sorted(p.name for p in (out / "data" / "labelled" / "test_features").iterdir())
    for name in NAMES:
        run = json.loads((out / "runs" / name / "run.json").read_text())
        assert run["n_chips"] == 2
        predictions = sorted(p.name for p in (out / "runs" / name / "predictions").iterdir())
        assert predictions == [f"{chip}.tif" for chip in test_chips]
    student = network_parameters(out / "models" / "student" / "fold_0")
    teacher = network_parameters(out / "models" / "teacher" / "fold_0")
    assert 400_000 <= student <= 500_000 < teacher


def test_student_learns_from_unlabelled_chips_of_training_locations_only(
    quick_demo: tuple[Path, int],
) -> None:
    out, _ = quick_demo
    teacher_folds = load_folds(out / "models" / "teacher" / "folds.csv")
    student_folds = load_folds(out / "models" / "student" / "folds.csv")
    unlabelled = pd.read_csv(out / "data" / "unlabelled" / "train_metadata.csv", dtype=str)
    assert not (out / "data" / "unlabelled" / "train_labels").exists()
    # the labelled chips keep the teacher's folds; the unlabelled ones join by location
    merged = student_folds.merge(teacher_folds, on=["chip_id", "location"], how="left")
    labelled = merged.dropna(subset=["fold_y"])
    assert (labelled["fold_x"] == labelled["fold_y"]).all()
    assert set(unlabelled["chip_id"]) <= set(student_folds["chip_id"])
    val_locations = set(teacher_folds.loc[teacher_folds["fold"] == 0, "location"])
    lines = (out / "models" / "student" / "exclude_unlabelled.txt").read_text().splitlines()
    excluded = {line for line in lines if line and not line.startswith("#")}
    at_val = set(unlabelled.loc[unlabelled["location"].isin(val_locations), "chip_id"])
    assert excluded == at_val


def test_demo_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-q", "demo", str(tmp_path / "rule"), "--chips", "3", "--test-chips", "2",
                 "--no-train"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "test Jaccard" in printed and "threshold" in printed
    assert "sample data" in printed  # the stage timings


def test_demo_refuses_a_non_empty_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["demo", str(tmp_path), "--no-train"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "precious"

"""Bad input gives one line and exit status 2, never a traceback (issue 11, section 4)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from clierrors import cli_error, reset_logging
from toydata import write_toy_dataset

from oncloudn.cli.main import main
from oncloudn.config import DistillConfig, TrainConfig, load_config
from oncloudn.data.validate import check_dataset
from oncloudn.errors import ConfigError
from oncloudn.models.builders import make_threshold_folder
from oncloudn.scoring.leaderboard import record_run
from oncloudn.scoring.report import score_arrays

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.batch_size=0", "trainer.batch_size must be >= 1, got 0"),
        ("optimizer.lr=-1", "optimizer.lr must be > 0, got -1.0"),
        ("trainer.epochs=0", "trainer.epochs must be >= 1"),
        ("trainer.grad_accum=0", "trainer.grad_accum must be >= 1"),
        ("trainer.threshold=1.5", "trainer.threshold must be in (0, 1)"),
        ("schedule.min_lr_ratio=2", "schedule.min_lr_ratio must be in [0, 1]"),
        ("optimizer.lr=.nan", "optimizer.lr must be > 0"),
        ("data.n_folds=1", "data.n_folds must be >= 2"),
        ("data.fold=7", "data.fold 7 does not exist with data.n_folds 5"),
        ("loss.terms.0.weight=-1", "loss.terms[0].weight must be >= 0"),
    ],
)
def test_config_ranges_are_checked_at_load(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(None, [override])


def test_distill_config_inherits_the_ranges() -> None:
    with pytest.raises(ConfigError, match="data.max_chips must be >= 1"):
        load_config(None, ["data.max_chips=0"], DistillConfig)
    with pytest.raises(ConfigError, match=r"distillation.alpha must be in \[0, 1\]"):
        load_config(None, ["distillation.alpha=2"], DistillConfig)


def test_shipped_configs_pass_the_ranges() -> None:
    for path in sorted((REPO / "configs").glob("*.yaml")):
        keys = set(yaml.safe_load(path.read_text()) or {})
        is_distill = bool(keys & {"teacher", "distillation"})
        load_config(path, None, DistillConfig if is_distill else TrainConfig)


def test_train_cli_refuses_zero_batch_size(capsys) -> None:
    config = str(REPO / "configs" / "tiny_cpu.yaml")
    line = cli_error(["train", config, "--set", "trainer.batch_size=0"], capsys)
    assert "trainer.batch_size must be >= 1, got 0" in line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["check-data", "ROOT", "--max-chips", "-5"], "--max-chips: must be an integer >= 1"),
        (["score", "P", "L", "--ignore-value", "300"], "--ignore-value: must be an integer in"),
        (["run-local", "z.zip", "d", "o", "--time-limit", "-5"], "--time-limit: must be a number"),
        (["leaderboard", "--limit", "0"], "--limit: must be an integer >= 1"),
    ],
)
def test_out_of_range_options_stop_at_parsing(argv: list[str], expected: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert expected in err and "Traceback" not in err


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    """Three 64 x 64 labelled train chips."""
    return write_toy_dataset(tmp_path / "data", ["aaaa", "bbbb", "cccc"], ["A", "B", "C"], size=64)


def test_leaderboard_on_a_file_that_is_not_sqlite(tmp_path: Path, capsys) -> None:
    db = tmp_path / "notes.sqlite"
    db.write_text("these are my notes, not a database\n" * 20)
    line = cli_error(["leaderboard", "--db", str(db)], capsys)
    assert str(db) in line and "not a usable leaderboard database" in line


def test_a_name_with_a_newline_keeps_its_table_row(tmp_path: Path, capsys) -> None:
    db = tmp_path / "board.sqlite"
    labels = {f"c{i}": np.eye(8, dtype=np.uint8) for i in range(3)}
    report = score_arrays(labels, labels, {c: "L" for c in labels}, n_bootstrap=0)
    record_run(db, report, {"name": "two\nlines"})
    record_run(db, report, {"name": "plain"})
    capsys.readouterr()
    try:
        assert main(["leaderboard", "--db", str(db)]) == 0
    finally:
        reset_logging()
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if "1.0000" in line]
    assert len(rows) == 2 and any("two\\nlines" in row for row in rows), out


def test_help_texts_are_whole(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["leaderboard", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "scores (1st-3rd place, benchmark, thresholding) beside the local runs" in text
    with pytest.raises(SystemExit):
        main(["pack", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "MODEL_DIR a model folder" in text
    for sub in ("install", "install-python", "show"):
        with pytest.raises(SystemExit):
            main(["runtime-env", sub, "--help"])
        assert f"oncloudn runtime-env {sub}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("missing", "predictions folder {p} does not exist"),
        ("file", "predictions folder {p} is a file, not a folder"),
        ("labels-missing", "labels folder {p} does not exist"),
        ("labels-file", "labels folder {p} is a file, not a folder"),
    ],
)
def test_score_describes_paths_of_the_wrong_kind(
    small_root: Path, tmp_path: Path, which: str, expected: str, capsys
) -> None:
    labels = small_root / "train_labels"
    wrong = {
        "missing": tmp_path / "nowhere",
        "file": small_root / "train_metadata.csv",
        "labels-missing": tmp_path / "nowhere",
        "labels-file": small_root / "train_metadata.csv",
    }[which]
    argv = ["score", str(wrong), str(labels)]
    if which.startswith("labels"):
        argv = ["score", str(labels), str(wrong)]
    assert expected.format(p=wrong) in cli_error(argv, capsys)


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("missing", "dataset root {p} does not exist; expected a dataset root holding"),
        ("file", "dataset root {p} is a file, not a folder"),
        ("features", "{p} looks like a features folder"),
        ("chip", "{p} looks like a chip folder"),
        ("other", "{p} has no train_features folder (found: train_labels)"),
    ],
)
def test_check_data_describes_what_it_found(
    small_root: Path, tmp_path: Path, which: str, expected: str, capsys
) -> None:
    other = tmp_path / "other"
    (other / "train_labels").mkdir(parents=True)
    wrong = {
        "missing": tmp_path / "nowhere",
        "file": small_root / "train_metadata.csv",
        "features": small_root / "train_features",
        "chip": small_root / "train_features" / "aaaa",
        "other": other,
    }[which]
    assert expected.format(p=wrong) in cli_error(["check-data", str(wrong)], capsys)


def test_model_folder_given_as_its_manifest(tmp_path: Path, capsys) -> None:
    folder = make_threshold_folder(tmp_path / "thr")
    line = cli_error(["pack", str(folder / "manifest.json"), str(tmp_path / "s.zip")], capsys)
    assert "is not a model folder: it is a file; pass the folder that holds it" in line
    line = cli_error(["pack", str(tmp_path / "nothing"), str(tmp_path / "s.zip")], capsys)
    assert "does not exist" in line


def test_unlabelled_train_split_is_usable_for_check_data(small_root: Path, capsys) -> None:
    shutil.rmtree(small_root / "train_labels")
    report = check_dataset(small_root)
    assert not report.has_structural_errors, report.errors
    assert report.n_checked == 3 and any("unlabelled split" in note for note in report.notes)


def test_training_on_unlabelled_chips_fails_up_front(
    small_root: Path, tmp_path: Path, capsys
) -> None:
    (small_root / "train_labels" / "bbbb.tif").unlink()
    overrides = [f"data.root={small_root}", f"trainer.out_dir={tmp_path / 'run'}"]
    config = str(REPO / "configs" / "tiny_cpu.yaml")
    argv = ["train", config, *[arg for o in overrides for arg in ("--set", o)]]
    line = cli_error(argv, capsys)
    assert "1 of 3 chips" in line and "bbbb" in line
    shutil.rmtree(small_root / "train_labels")
    line = cli_error(argv, capsys)
    assert "is unlabelled" in line and "oncloudn distill" in line
    assert not (tmp_path / "run" / "fold_0").exists()

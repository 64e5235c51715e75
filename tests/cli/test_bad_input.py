"""Bad input gives one line and exit status 2, never a traceback (issue 11, section 4)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clierrors import cli_error

from oncloudn.cli.main import main
from oncloudn.config import DistillConfig, TrainConfig, load_config
from oncloudn.errors import ConfigError

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
        load_config(path, None, DistillConfig if "distill" in path.name else TrainConfig)


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

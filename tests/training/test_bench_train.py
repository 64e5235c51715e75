"""`oncloudn bench train` prints throughput and memory figures."""

from __future__ import annotations

import re
from pathlib import Path

from oncloudn.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def test_bench_train_prints_figures(capsys) -> None:
    status = main(
        ["bench", "train", str(REPO / "configs" / "tiny_cpu.yaml"), "--steps", "2", "--size", "32"]
    )
    assert status == 0
    out = capsys.readouterr().out
    samples = re.search(r"([0-9.]+) samples/s", out)
    memory = re.search(r"peak memory (\d+) MiB", out)
    assert samples and float(samples.group(1)) > 0
    assert memory and int(memory.group(1)) > 0
    assert "7,653 params" in out  # unet widths [4, 8, 16] on 4 bands


def test_bench_group_without_subcommand_prints_help(capsys) -> None:
    assert main(["bench"]) == 1
    assert "train" in capsys.readouterr().out

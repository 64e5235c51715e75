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


def test_bench_train_runs_the_trainers_step_and_objective(monkeypatch) -> None:
    import oncloudn.training.bench as bench
    import oncloudn.training.step as step
    from oncloudn.config import load_config
    from oncloudn.training.objective import Objective, build_objective

    assert bench.train_step is step.train_step  # the epoch loop's step, not a copy
    calls: list[int] = []

    def counting_step(*args, **kwargs):
        calls.append(1)
        return step.train_step(*args, **kwargs)

    class Halved(Objective):
        name = "halved"

        def __init__(self, config) -> None:
            super().__init__()
            self.label = build_objective(config)
            self.seen: list[set[str]] = []

        def forward(self, logits, batch):
            self.seen.append(set(batch))
            return 0.5 * self.label(logits, batch)

    monkeypatch.setattr(bench, "train_step", counting_step)
    config = load_config(REPO / "configs" / "tiny_cpu.yaml")
    objective = Halved(config)
    result = bench.bench_train(config, steps=3, batch_size=2, size=32, objective=objective)
    assert len(calls) == 4 and len(objective.seen) == 4  # warm-up + 3 timed steps
    assert objective.seen[0] == {"image", "mask", "valid"} and result.steps == 3

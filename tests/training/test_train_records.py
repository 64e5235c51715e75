"""The typed best-epoch record: improvement rules and checkpoint round trip."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from oncloudn.training.checkpoint import load_training_state, save_training_state
from oncloudn.training.optim import Optimization
from oncloudn.training.records import BestEpoch, Progress


def test_best_epoch_improvement_and_staleness() -> None:
    best = BestEpoch()
    assert best.record(1, 0.0, 0.0) and math.isnan(best.score)  # the first score always wins
    assert best.record(2, 1.0, 4.0) and best.score == 0.25 and best.epoch == 2
    assert not best.record(3, 1.0, 5.0) and best.stale == 1
    assert not best.record(4, 0.0, 0.0) and best.stale == 2  # nan never improves
    assert best.record(5, 3.0, 4.0) and best.stale == 0 and best.epoch == 5
    assert (best.intersection, best.union) == (3.0, 4.0)


def test_best_epoch_round_trips_and_reads_older_dicts(tmp_path: Path) -> None:
    old = {"score": None, "epoch": 0, "intersection": 0.0, "union": 0.0, "stale": 0}
    assert BestEpoch.from_dict(old) == BestEpoch()
    network = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    optimization = Optimization(optimizer, torch.amp.GradScaler("cpu", enabled=False), scheduler)
    progress = Progress(epoch=3, best=BestEpoch(0.5, 2, 1.0, 2.0, 1), history=[{"epoch": 1}])
    path = save_training_state(tmp_path / "last.pt", network, optimization, progress)
    assert torch.load(path, weights_only=False)["best"] == progress.best.to_dict()
    restored = load_training_state(path, torch.nn.Linear(2, 1), optimization)
    assert restored == progress and isinstance(restored.best, BestEpoch)

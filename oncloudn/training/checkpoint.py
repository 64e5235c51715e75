"""Training checkpoints (``last.pt``) and the RNG states they carry, written atomically.

A checkpoint holds the model, optimizer, scheduler and AMP-scaler states, the number of
completed epochs, the best validation so far (a :class:`BestEpoch` stored as a plain dict),
the history and the RNG states of python, numpy and torch. The trainer additionally reseeds
every epoch from ``(seed, epoch)``, so a resumed run replays exactly the epochs the
uninterrupted run would have.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from oncloudn.runtime.atomic import atomic_path
from oncloudn.training.optim import Optimization
from oncloudn.training.records import BestEpoch, Progress

CHECKPOINT_NAME = "last.pt"


def rng_state() -> dict[str, Any]:
    """The current RNG states of python, numpy and torch (CPU and CUDA)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states saved by :func:`rng_state` (CUDA states only where available)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*values: int) -> int:
    """A 31-bit seed derived from integers (e.g. ``(seed, epoch)`` or ``(seed, epoch, index)``)."""
    return int(np.random.SeedSequence([int(v) % 2**32 for v in values]).generate_state(1)[0] >> 1)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Save a checkpoint dict atomically (temporary sibling + ``os.replace``)."""
    path = Path(path)
    with atomic_path(path) as temp, open(temp, "wb") as stream:
        torch.save(state, stream)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (our own file: full unpickling)."""
    return torch.load(Path(path), map_location=map_location, weights_only=False)


def save_training_state(
    path: str | Path, network: nn.Module, optimization: Optimization, progress: Progress
) -> Path:
    """Save everything a resume needs (network, optimization, RNG states, progress)."""
    state = {
        "epoch": progress.epoch,
        "model": network.state_dict(),
        **optimization.state_dict(),
        "rng": rng_state(),
        "best": progress.best.to_dict(),
        "history": list(progress.history),
        "stopped_early": progress.stopped_early,
    }
    return save_checkpoint(path, state)


def load_training_state(
    path: str | Path, network: nn.Module, optimization: Optimization
) -> Progress:
    """Restore a :func:`save_training_state` checkpoint in place; returns its progress.

    RNG states are restored too (loaded on the CPU, where they must stay).
    """
    state = load_checkpoint(path, "cpu")
    network.load_state_dict(state["model"])
    optimization.load_state_dict(state)
    set_rng_state(state["rng"])
    return Progress(
        epoch=int(state["epoch"]),
        best=BestEpoch.from_dict(state["best"]),
        history=list(state["history"]),
        stopped_early=bool(state["stopped_early"]),
    )

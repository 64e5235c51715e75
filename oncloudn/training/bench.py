"""Training-throughput benchmark: samples/s and peak memory of a config's model and loss.

Runs a few of the trainer's own steps (:func:`oncloudn.training.step.train_step`) on
synthetic raw-DN batches (chip-like values, random labels), so it measures the model,
objective and optimizer, not the disk. Figures are reported, never judged.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import dataclass

import torch

from oncloudn.config import TrainConfig
from oncloudn.runtime.unet import count_parameters
from oncloudn.training.build import build_model
from oncloudn.training.distributed import resolve_device
from oncloudn.training.objective import Batch, Objective, build_objective
from oncloudn.training.optim import Optimization, build_optimizer
from oncloudn.training.step import Placement, train_step

logger = logging.getLogger(__name__)


@dataclass
class TrainBench:
    """Measured training throughput.

    Attributes:
        device: Device the steps ran on.
        batch_size: Chips per step.
        size: Chip height and width.
        steps: Timed steps (after one warm-up step).
        seconds: Wall time of the timed steps.
        samples_per_s: Chips per second.
        steps_per_s: Steps per second.
        peak_memory_mb: CUDA ``max_memory_allocated`` or the process's peak RSS (CPU), MiB.
        memory_kind: ``cuda_allocated`` or ``cpu_peak_rss``.
        params: Trainable parameters of the model.
        threads: torch CPU threads (``torch.get_num_threads()``).
    """

    device: str
    batch_size: int
    size: int
    steps: int
    seconds: float
    samples_per_s: float
    steps_per_s: float
    peak_memory_mb: float
    memory_kind: str
    params: int
    threads: int


def _peak_memory(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB and its kind: CUDA ``max_memory_allocated`` or the peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_allocated"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak / 2**20 if sys.platform == "darwin" else peak / 1024), "cpu_peak_rss"


def synthetic_batch(
    batch_size: int, bands: int, size: int, device: torch.device, channels_last: bool = False
) -> Batch:
    """A training batch of random chip-like raw DN and random labels, every pixel valid."""
    image = torch.randint(0, 12000, (batch_size, bands, size, size), device=device).float()
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    mask = (torch.rand(batch_size, size, size, device=device) > 0.6).float()
    valid = torch.ones(batch_size, size, size, dtype=torch.bool, device=device)
    return {"image": image, "mask": mask, "valid": valid}


def bench_train(
    config: TrainConfig,
    steps: int = 5,
    batch_size: int | None = None,
    size: int = 512,
    objective: Objective | None = None,
) -> TrainBench:
    """Time ``steps`` training steps (plus one warm-up) of a config's model on ``size`` chips.

    Args:
        config: Model, loss, optimizer and trainer settings (device, AMP, channels-last).
        steps: Timed optimizer steps.
        batch_size: Chips per step (default ``trainer.batch_size``).
        size: Chip height and width (512 for On Cloud N chips).
        objective: The loss (default: the config's label loss, as in training).
    """
    if config.trainer.cpu_threads is not None:
        torch.set_num_threads(max(1, config.trainer.cpu_threads))
    placement = Placement.of(config.trainer, resolve_device(config.trainer.device))
    device, cuda = placement.device, placement.device.type == "cuda"
    batch_size = batch_size or config.trainer.batch_size
    model = build_model(config, placement)
    objective = (objective or build_objective(config)).to(device)
    optimization = Optimization(
        build_optimizer(model.parameters(), config.optimizer),
        torch.amp.GradScaler(device.type, enabled=placement.amp),
    )
    bands = len(config.data.bands)
    batch = synthetic_batch(batch_size, bands, size, device, placement.channels_last)
    model.train()

    def step() -> None:
        train_step(model, batch, objective, optimization, placement)

    step()  # warm-up (allocations, cuDNN autotuning)
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak, kind = _peak_memory(device)
    return TrainBench(
        device=str(device),
        batch_size=batch_size,
        size=size,
        steps=steps,
        seconds=seconds,
        samples_per_s=steps * batch_size / seconds,
        steps_per_s=steps / seconds,
        peak_memory_mb=peak,
        memory_kind=kind,
        params=count_parameters(model),
        threads=torch.get_num_threads(),
    )

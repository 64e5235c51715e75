"""Training-throughput benchmark: samples/s and peak memory of a config's model and loss.

Runs a few optimizer steps on synthetic raw-DN batches (chip-like values, random labels), so
it measures the model, loss and optimizer, not the disk. Figures are reported, never judged.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import dataclass

import torch

from oncloudn.config import TrainConfig
from oncloudn.models.registry import create_model
from oncloudn.training.distributed import resolve_device
from oncloudn.training.losses import build_loss
from oncloudn.training.optim import build_optimizer

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


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def bench_train(
    config: TrainConfig, steps: int = 5, batch_size: int | None = None, size: int = 512
) -> TrainBench:
    """Time ``steps`` training steps (plus one warm-up) of a config's model on ``size`` chips.

    Args:
        config: Model, loss, optimizer and trainer settings (device, AMP, channels-last).
        steps: Timed optimizer steps.
        batch_size: Chips per step (default ``trainer.batch_size``).
        size: Chip height and width (512 for On Cloud N chips).
    """
    if config.trainer.cpu_threads is not None:
        torch.set_num_threads(max(1, config.trainer.cpu_threads))
    device = resolve_device(config.trainer.device)
    cuda = device.type == "cuda"
    batch_size = batch_size or config.trainer.batch_size
    torch.manual_seed(config.trainer.seed)
    model = create_model(config.model, config.data.bands, config.data.normalization).to(device)
    channels_last = bool(config.trainer.channels_last and cuda)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp = bool(config.trainer.amp and cuda)
    criterion = build_loss(config.loss.terms).to(device)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    image = torch.randint(
        0, 12000, (batch_size, len(config.data.bands), size, size), device=device
    ).float()
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    target = (torch.rand(batch_size, size, size, device=device) > 0.6).float()
    model.train()

    def step() -> None:
        with torch.autocast(device_type=device.type, enabled=amp):
            logits = model(image)
        loss = criterion((logits[:, 1] - logits[:, 0]).float(), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

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
    if cuda:
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_allocated"
    else:
        peak, kind = _peak_rss_mb(), "cpu_peak_rss"
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
        params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        threads=torch.get_num_threads(),
    )

"""Per-epoch logging of a fold's training: log lines and optional TensorBoard scalars."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from oncloudn.training.records import BestEpoch

logger = logging.getLogger(__name__)


class EpochLog:
    """Logs each epoch's record (rank 0 only) and mirrors it to TensorBoard when asked.

    Args:
        fold: The fold being trained.
        epochs: Planned epochs.
        folder: The fold's folder (``tensorboard/`` goes there).
        tensorboard: Write TensorBoard scalars (skipped with a warning if not installed).
        enabled: Whether this process logs (rank 0).
    """

    def __init__(
        self, fold: int, epochs: int, folder: Path, tensorboard: bool, enabled: bool
    ) -> None:
        self.fold = fold
        self.epochs = epochs
        self.enabled = enabled
        self.writer = _tensorboard_writer(folder) if tensorboard and enabled else None

    def epoch(self, record: dict[str, Any], best: BestEpoch) -> None:
        """Log one epoch's record (``epoch``, ``loss``, ``lr``, ``seconds``, ``val_jaccard``)."""
        if not self.enabled:
            return
        score = record.get("val_jaccard")
        val = (
            f"val Jaccard {score:.4f} (best {best.score:.4f} @{best.epoch})"
            if score is not None
            else "no val"
        )
        logger.info(
            "fold %d epoch %d/%d: loss %.4f, %s, lr %.2e, %.1f s",
            self.fold, record["epoch"], self.epochs, record["loss"], val,
            record["lr"], record["seconds"],
        )  # fmt: skip
        if self.writer is not None:
            self.writer.add_scalar("loss/train", record["loss"], record["epoch"])
            self.writer.add_scalar("lr", record["lr"], record["epoch"])
            if score is not None:
                self.writer.add_scalar("jaccard/val", score, record["epoch"])

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()


def _tensorboard_writer(folder: Path) -> Any:
    try:
        # lazy: optional dependency (pip install oncloudn[tensorboard])
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("trainer.log_tensorboard is set but tensorboard is not installed; skipped")
        return None
    return SummaryWriter(log_dir=str(folder / "tensorboard"))

"""Training objectives: what the trainer minimises, injected into it.

An objective is a ``torch.nn.Module`` called once per batch, after the forward pass and
outside autocast, as ``objective(logits, batch) -> scalar loss``:

- ``logits``: the model's 2-class output ``[N, 2, H, W]`` (clear, cloud), in the autocast
  dtype (call ``.float()`` first);
- ``batch``: the batch on the model's device, ``{"image": raw DN [N, C, H, W], "mask":
  {0, 1} [N, H, W], "valid": bool [N, H, W], "chip_id": [...]}`` plus every extra per-pixel
  target of the run's :class:`~oncloudn.training.data.TargetSource` under its own key
  (e.g. a cached teacher logit difference ``[N, H, W]``). ``valid`` is false on nodata,
  ignored-label pixels and pixels an augmentation brought in from outside the chip.

A new objective (e.g. distillation from teacher logits) is a new subclass passed to
``train(config, objective=...)``; the trainer, its step and ``bench train`` need no edit.
Being a module, an objective may hold sub-modules (an online teacher); the trainer moves it
to the training device. Only the model's parameters are optimised.
"""

from __future__ import annotations

import torch
from torch import nn

from oncloudn.config import TrainConfig
from oncloudn.training.losses import IGNORE_INDEX, WeightedLoss, build_loss

Batch = dict  # {"image", "mask", "valid", "chip_id", ...extra targets} (see module docstring)


def cloud_logit(logits: torch.Tensor) -> torch.Tensor:
    """Binary cloud logit ``[N, H, W]`` of 2-class logits ``[N, 2, H, W]``."""
    return logits[:, 1] - logits[:, 0]


def label_target(batch: Batch) -> torch.Tensor:
    """The batch's labels ``[N, H, W]`` with :data:`IGNORE_INDEX` where ``valid`` is false."""
    mask = batch["mask"]
    return torch.where(batch["valid"], mask, torch.full_like(mask, IGNORE_INDEX))


class Objective(nn.Module):
    """Base class of training objectives (see the module docstring for the contract).

    Attributes:
        name: Short name shown in logs.
    """

    name = "objective"

    def forward(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The scalar loss of 2-class ``logits`` on ``batch``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(logits, batch)")


class LabelObjective(Objective):
    """The label loss: a weighted loss on the cloud logit against the valid labels.

    Args:
        loss: Loss of cloud logits ``[N, H, W]`` against targets in ``{0, 1, IGNORE_INDEX}``.
    """

    name = "label"

    def __init__(self, loss: WeightedLoss) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Loss of ``cloud_logit(logits)`` against the batch's valid labels."""
        return self.loss(cloud_logit(logits.float()), label_target(batch))


def build_objective(config: TrainConfig) -> Objective:
    """The default objective of a config: the label loss of ``loss.terms``.

    Raises:
        ConfigError: An invalid loss term (see :func:`build_loss`).
    """
    return LabelObjective(build_loss(config.loss.terms))

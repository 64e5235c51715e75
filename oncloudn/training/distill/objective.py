"""The distillation objective: pixel-wise KD on temperature-softened 2-class logits.

Per valid pixel, with the teacher's logit difference ``d`` read as the 2-class logits
``[0, d]`` and the student's 2-class logits ``s``::

    kd = T^2 * KL(softmax([0, d] / T) || softmax(s / T))

The loss is ``mean over valid pixels of w * kd + (1 - alpha) * label loss``, where ``w`` is
``alpha`` on labelled pixels and 1 on unlabelled ones, and the label loss is ``loss.terms``
on the labelled pixels (absent from a batch without labels). ``valid`` is false on nodata,
label-255 pixels and pixels augmented in from outside the chip, so none of them gets a loss.

With ``disagreement_weight = q < 1``, labelled pixels where the teacher's hard label
(``d > 0``) differs from the label get ``q * w`` in the KD term, and the label loss becomes
``q * L(all labelled pixels) + (1 - q) * L(agreeing pixels)``.

The teacher's target comes from the batch (cached mode, key ``teacher``) or from running the
teacher on the batch (online mode): on ``teacher_image`` when the batch carries it (the
geometrically augmented image *before* photometric augmentation), else on ``image``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oncloudn.config import DistillationConfig
from oncloudn.training.distill.cache import TEACHER_KEY
from oncloudn.training.distill.teacher import Teacher
from oncloudn.training.losses import IGNORE_INDEX
from oncloudn.training.objective import Batch, LabelObjective, Objective

TEACHER_IMAGE_KEY = "teacher_image"


def kd_pixel_loss(
    student: torch.Tensor, teacher_difference: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(teacher || student)`` per pixel ``[N, H, W]`` of 2-class student logits
    ``[N, 2, H, W]`` and teacher logit differences ``[N, H, W]`` (read as ``[0, d]``)."""
    teacher = torch.stack([torch.zeros_like(teacher_difference), teacher_difference], dim=1)
    log_p = F.log_softmax(teacher.float() / temperature, dim=1)
    log_q = F.log_softmax(student.float() / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1) * temperature**2


class DistillObjective(Objective):
    """KD mixed with the label loss (see the module docstring).

    Args:
        label: The label loss (``loss.terms``).
        settings: Temperature, alpha, disagreement weight.
        teacher: Online mode: the teacher run on each batch (kept out of the module's
            children: it is never trained, moved or saved); ``None``: cached targets.
    """

    name = "distill"

    def __init__(
        self, label: LabelObjective, settings: DistillationConfig, teacher: Teacher | None = None
    ) -> None:
        super().__init__()
        self.label = label
        self.temperature = float(settings.temperature)
        self.alpha = float(settings.alpha)
        self.disagreement = float(settings.disagreement_weight)
        self.__dict__["teacher"] = teacher  # not a sub-module
        self.name = f"distill-{'online' if teacher is not None else 'cached'}"

    def teacher_difference(self, batch: Batch) -> torch.Tensor:
        """The teacher's logit differences ``[N, H, W]`` of the batch."""
        if self.teacher is None:
            return batch[TEACHER_KEY].float()
        image = batch.get(TEACHER_IMAGE_KEY, batch["image"])
        return self.teacher.logit_difference(image)

    def forward(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The distillation loss of 2-class ``logits`` on ``batch``."""
        logits = logits.float()
        difference = self.teacher_difference(batch)
        valid = batch["valid"]
        labelled = valid & (batch["mask"] != IGNORE_INDEX)
        weight = torch.where(labelled, self.alpha, 1.0)
        disagree = labelled & ((difference > 0).float() != batch["mask"])
        if self.disagreement < 1.0:
            weight = torch.where(disagree, weight * self.disagreement, weight)
        kd = kd_pixel_loss(logits, difference, self.temperature)
        kd = torch.where(valid, kd * weight, torch.zeros_like(kd))
        loss = kd.sum() / valid.sum().clamp(min=1)
        if self.alpha < 1.0 and bool(labelled.any()):
            loss = loss + (1.0 - self.alpha) * self.label_loss(logits, batch, disagree)
        return loss

    def label_loss(
        self, logits: torch.Tensor, batch: Batch, disagree: torch.Tensor
    ) -> torch.Tensor:
        """The label loss, mixed with its value on agreeing pixels when down-weighting."""
        loss = self.label(logits, batch)
        if self.disagreement < 1.0 and bool(disagree.any()):
            agreeing = {**batch, "valid": batch["valid"] & ~disagree}
            agree = self.label(logits, agreeing)
            loss = self.disagreement * loss + (1.0 - self.disagreement) * agree
        return loss

"""A distillation run's chips: several roots through the catalog, as the trainer reads them.

:class:`DistillChips` is the trainer's ``ChipSource``: it lists the catalog's chips (held-out
locations removed), reads them with labels where they exist, scores unlabelled validation
chips of a fold without labelled ones against the teacher's hard labels, and describes the
data and the teacher (with their licences) for the student's provenance.
:class:`CleanImage` is the online mode's ``TargetSource`` when the augmentation has
photometric steps: the chip's image moved by the geometric steps only, which the teacher sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from oncloudn.config import DistillConfig
from oncloudn.data.chips import read_chip
from oncloudn.data.roots import CatalogDataset, ChipCatalog
from oncloudn.training.augment import CONTINUOUS
from oncloudn.training.distill.objective import TEACHER_IMAGE_KEY

VAL_LABELS = "labels"
VAL_TEACHER = "teacher"
VAL_NONE = "none"


class DistillChips:
    """The ``ChipSource`` of a distillation run.

    Args:
        config: The run's config (bands, roots, holdout, mode).
        catalog: The run's chips.
        teacher: The teacher's description (provenance).
        reference: Chip id -> the teacher's hard label, for ``reference_ids``.
        reference_ids: Unlabelled chips validated against the teacher.
    """

    def __init__(
        self,
        config: DistillConfig,
        catalog: ChipCatalog,
        teacher: dict[str, Any],
        reference: Callable[[str], np.ndarray] | None = None,
        reference_ids: frozenset[str] = frozenset(),
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.teacher = teacher
        self.reference = reference
        self.reference_ids = reference_ids

    def chips(self) -> pd.DataFrame:
        """``chip_id, location`` of the catalog's chips."""
        return self.catalog.frame[["chip_id", "location"]]

    def dataset(self, chip_ids: list[str], training: bool) -> CatalogDataset:
        """Samples of ``chip_ids`` (see :class:`CatalogDataset`)."""
        return CatalogDataset(
            self.catalog,
            chip_ids,
            self.config.data.bands,
            training=training,
            reference=self.reference,
            reference_ids=self.reference_ids,
        )

    def describe(self) -> dict[str, Any]:
        """Roots (with licences), held-out locations and chips, the teacher, the settings."""
        settings = self.config.distillation
        return {
            "roots": self.catalog.describe(),
            "holdout_locations": list(self.config.data.holdout_locations),
            "n_held_out_chips": int(self.catalog.held_out["chip_id"].nunique()),
            "teacher": self.teacher,
            "distillation": {
                "mode": settings.mode,
                "temperature": settings.temperature,
                "alpha": settings.alpha,
                "disagreement_weight": settings.disagreement_weight,
                "use_labels": settings.use_labels,
            },
        }

    def metric_notes(self, chip_ids: list[str]) -> dict[str, Any]:
        """``val_reference``: ``labels``, ``teacher`` (no validation chip has labels) or
        ``none``, and the number of labelled validation chips."""
        labelled = sum(self.catalog.labelled(chip_id) for chip_id in chip_ids)
        teacher = any(chip_id in self.reference_ids for chip_id in chip_ids)
        reference = VAL_LABELS if labelled else VAL_TEACHER if teacher else VAL_NONE
        return {"val_reference": reference, "n_val_labelled": int(labelled)}


class CleanImage:
    """A ``TargetSource``: the chip's raw DN again, moved only by the geometric steps.

    The augmenter applies photometric steps to ``image`` alone, so this copy is what the
    online teacher sees: the same image cached targets were computed from, in the same
    geometry as the student's input.
    """

    kinds = {TEACHER_IMAGE_KEY: CONTINUOUS}

    def __init__(self, catalog: ChipCatalog, bands: list[str]) -> None:
        self.catalog = catalog
        self.bands = list(bands)

    def __call__(self, chip_id: str) -> dict[str, np.ndarray]:
        """``{"teacher_image": float32 [C, H, W]}`` of a chip."""
        paths = self.catalog.paths_of(chip_id)
        bands = read_chip(paths, chip_id, self.bands, with_label=False).bands
        return {TEACHER_IMAGE_KEY: bands.astype(np.float32)}

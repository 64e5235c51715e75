"""Parity of an exported (or quantized) model with its source on chips: probabilities and masks.

Both models run through the prediction core's array level on the same raw chips with the
same TTA views; the report gives the largest and mean absolute probability difference and
the pixels whose mask (at the source's threshold) differs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from oncloudn.errors import ConfigError
from oncloudn.runtime.chipio import list_chip_ids, read_bands
from oncloudn.runtime.predict import predict_batch


@dataclass
class Parity:
    """Agreement of a candidate model with a reference on chips.

    Attributes:
        n_chips: Chips compared.
        max_abs_difference: Largest absolute difference of cloud probabilities.
        mean_abs_difference: Mean absolute difference over all pixels.
        differing_mask_pixels: Pixels whose mask differs at ``threshold``.
        mask_agreement: Fraction of pixels whose mask agrees.
        threshold: The reference's threshold.
    """

    n_chips: int
    max_abs_difference: float
    mean_abs_difference: float
    differing_mask_pixels: int
    mask_agreement: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict."""
        return asdict(self)


def chip_paths(features_dir: str | os.PathLike, limit: int | None = None) -> list[str]:
    """Chip folders of a features folder (sorted; the first ``limit``).

    Raises:
        ConfigError: The folder is missing or holds no chip folders.
    """
    features_dir = os.fspath(features_dir)
    if not os.path.isdir(features_dir):
        raise ConfigError(
            f"chips folder {features_dir} does not exist; pass a <root>/<split>_features folder"
        )
    ids = list_chip_ids(features_dir)
    if not ids:
        raise ConfigError(f"chips folder {features_dir} holds no chip folders")
    return [os.path.join(features_dir, chip_id) for chip_id in ids[:limit]]


def compare_on_chips(
    reference: Any,
    candidate: Any,
    chips: Sequence[str],
    views: Sequence[str] | None = None,
) -> Parity:
    """Run both models on each chip (one at a time) and compare.

    Args:
        reference: The source model (e.g. the torch network).
        candidate: The exported model.
        chips: Chip folders.
        views: TTA views for both (default: each model's manifest).
    """
    threshold = float(reference.manifest.threshold)
    largest, total, count, differing = 0.0, 0.0, 0, 0
    for chip in chips:
        raw = read_bands(chip, reference.bands)[None]
        expected = predict_batch(reference, raw, views=views)
        got = predict_batch(candidate, raw, views=views)
        difference = np.abs(got - expected)
        largest = max(largest, float(difference.max()))
        total += float(difference.sum())
        count += difference.size
        differing += int(((got >= threshold) != (expected >= threshold)).sum())
    return Parity(
        n_chips=len(chips),
        max_abs_difference=largest,
        mean_abs_difference=total / max(count, 1),
        differing_mask_pixels=differing,
        mask_agreement=1.0 - differing / max(count, 1),
        threshold=threshold,
    )

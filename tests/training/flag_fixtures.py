"""Shared fixture of the flag-labels tests: sample data with one inverted label and an OOF file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from oncloudn.data.chips import DatasetPaths, list_chips, read_chip
from oncloudn.data.sample import generate_sample_dataset
from oncloudn.training.oof import write_oof


@dataclass
class InvertedSample:
    """A sample root whose ``victim`` chip has its label inverted on disk."""

    root: Path
    oof: Path
    victim: str
    chip_ids: list[str]


def inverted_label_sample(tmp_path: Path) -> InvertedSample:
    """Seeded 64-px sample data, near-perfect OOF "predictions", one label inverted after."""
    root = generate_sample_dataset(tmp_path / "data", chips=8, test_chips=1, seed=5, size=64)
    paths = DatasetPaths(root, "train")
    chip_ids = list(list_chips(paths)["chip_id"])
    rng = np.random.default_rng(0)
    # "Predictions" = the true labels with a little noise, written as an OOF file.
    probabilities = {}
    for chip_id in chip_ids:
        label = read_chip(paths, chip_id).label.astype(np.float32)
        probabilities[chip_id] = np.clip(label * 0.8 + rng.uniform(0, 0.2, label.shape), 0, 1)
    oof = write_oof(tmp_path / "oof" / "fold_0.npz", probabilities)
    # Invert one chip's label on disk: it must come out on top.
    cloud_fraction = {c: float(read_chip(paths, c).label.mean()) for c in chip_ids}
    victim = min(chip_ids, key=lambda c: abs(cloud_fraction[c] - 0.4))
    with rasterio.open(paths.label_path(victim), "r+") as dataset:
        dataset.write(1 - dataset.read(1), 1)
    return InvertedSample(root, oof, victim, chip_ids)

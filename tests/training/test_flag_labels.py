"""flag-labels ranks a deliberately inverted label first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import rasterio

from oncloudn.cli.main import main
from oncloudn.data.chips import DatasetPaths, list_chips, read_chip
from oncloudn.data.sample import generate_sample_dataset
from oncloudn.training.flag_labels import chip_disagreement
from oncloudn.training.oof import write_oof


def test_inverted_label_ranks_first(tmp_path: Path, capsys) -> None:
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
    label_path = paths.label_path(victim)
    with rasterio.open(label_path, "r+") as dataset:
        dataset.write(1 - dataset.read(1), 1)
    out = tmp_path / "flags.csv"
    exclude = tmp_path / "exclude.txt"
    status = main(
        [
            "flag-labels",
            str(oof),
            str(root),
            "--out",
            str(out),
            "--top",
            "1",
            "--exclude-out",
            str(exclude),
        ]
    )
    assert status == 0
    frame = pd.read_csv(out, dtype={"chip_id": str})
    assert frame.loc[0, "chip_id"] == victim and bool(frame.loc[0, "likely_inverted"])
    assert frame["rank"].tolist() == list(range(1, len(chip_ids) + 1))
    assert not frame.loc[1:, "likely_inverted"].any()
    assert victim in capsys.readouterr().out
    assert exclude.read_text().splitlines()[-1] == victim


def test_chip_disagreement_figures() -> None:
    label = np.zeros((4, 4), np.uint8)
    label[:2] = 1
    agree = chip_disagreement(label.astype(np.float32), label)
    assert agree["jaccard"] == 1.0 and agree["disagreement"] == 0.0 and not agree["likely_inverted"]
    flipped = chip_disagreement(1.0 - label.astype(np.float32), label)
    assert (
        flipped["jaccard"] == 0.0
        and flipped["inverted_jaccard"] == 1.0
        and flipped["likely_inverted"]
    )
    empty = chip_disagreement(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8))
    assert empty["disagreement"] == 0.0
    missed = chip_disagreement(np.ones((4, 4), np.float32), np.zeros((4, 4), np.uint8))
    assert missed["disagreement"] == 1.0 and not missed["likely_inverted"]

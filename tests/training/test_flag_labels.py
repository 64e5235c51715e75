"""flag-labels ranks a deliberately inverted label first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from flag_fixtures import inverted_label_sample

from oncloudn.cli.main import main
from oncloudn.training.flag_labels import chip_disagreement


def test_inverted_label_ranks_first(tmp_path: Path, capsys) -> None:
    sample = inverted_label_sample(tmp_path)
    root, oof, victim, chip_ids = sample.root, sample.oof, sample.victim, sample.chip_ids
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

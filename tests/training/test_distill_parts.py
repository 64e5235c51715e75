"""Pieces of distillation: the KD loss and its masks, the resumable fp16 teacher cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oncloudn.config import DistillationConfig, LossTerm
from oncloudn.data.chips import DatasetPaths, read_chip
from oncloudn.data.roots import RootSpec, build_catalog
from oncloudn.data.sample import generate_sample_dataset
from oncloudn.errors import DataError
from oncloudn.training.distill.cache import (
    DATA_NAME,
    ITEM,
    CachedTargets,
    TargetCache,
    content_hashes,
)
from oncloudn.training.distill.objective import DistillObjective, kd_pixel_loss
from oncloudn.training.losses import IGNORE_INDEX, build_loss
from oncloudn.training.objective import LabelObjective


def _objective(**settings: float) -> DistillObjective:
    label = LabelObjective(build_loss([LossTerm("bce", 1.0)]))
    return DistillObjective(label, DistillationConfig(mode="cached", **settings))


def _batch(n: int = 2, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, dict]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 2, size, size, generator=generator)
    batch = {
        "image": torch.rand(n, 4, size, size, generator=generator) * 3000,
        "mask": (torch.rand(n, size, size, generator=generator) > 0.5).float(),
        "valid": torch.ones(n, size, size, dtype=torch.bool),
        "teacher": torch.randn(n, size, size, generator=generator) * 3,
    }
    return logits, batch


def test_kd_is_the_binary_kl_scaled_by_t_squared() -> None:
    logits, batch = _batch()
    d, temperature = batch["teacher"], 3.0
    p = torch.sigmoid(d / temperature)
    q = torch.sigmoid((logits[:, 1] - logits[:, 0]) / temperature)
    expected = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()) * temperature**2
    torch.testing.assert_close(kd_pixel_loss(logits, d, temperature), expected)
    same = torch.stack([logits[:, 0], logits[:, 0] + d], dim=1)  # student = teacher + shift
    assert float(kd_pixel_loss(same, d, temperature).abs().max()) < 1e-5


def test_invalid_pixels_get_no_loss_and_unlabelled_chips_no_label_loss() -> None:
    logits, batch = _batch()
    objective = _objective(alpha=0.3)
    batch["valid"][:, :4] = False
    base = objective(logits, batch)
    changed = {**batch, "teacher": batch["teacher"].clone(), "mask": batch["mask"].clone()}
    changed["teacher"][:, :4] = 50.0
    changed["mask"][:, :4] = 1 - changed["mask"][:, :4]
    assert torch.equal(objective(logits, changed), base)
    unlabelled = {**batch, "mask": torch.full_like(batch["mask"], IGNORE_INDEX)}
    kd = kd_pixel_loss(logits, batch["teacher"], 2.0)[batch["valid"]].mean()
    torch.testing.assert_close(objective(logits, unlabelled), kd)  # weight 1, no label term
    kd_only = _objective(alpha=1.0)(logits, batch)
    torch.testing.assert_close(kd_only, kd)


def test_disagreement_weight_down_weights_disagreeing_pixels() -> None:
    logits, batch = _batch(seed=1)
    batch["mask"] = (batch["teacher"] > 0).float()
    batch["mask"][:, 0] = 1 - batch["mask"][:, 0]  # the label disagrees on row 0
    full, muted = (
        _objective(alpha=0.5)(logits, batch),
        _objective(alpha=0.5, disagreement_weight=0.0),
    )
    agreeing = {**batch, "valid": batch["valid"].clone()}
    agreeing["valid"][:, 0] = False
    kd = kd_pixel_loss(logits, batch["teacher"], 2.0)
    kd_term = (0.5 * kd[agreeing["valid"]]).sum() / batch["valid"].sum()
    label = LabelObjective(build_loss([LossTerm("bce", 1.0)]))(logits, agreeing)
    torch.testing.assert_close(muted(logits, batch), kd_term + 0.5 * label)
    assert not torch.allclose(full, muted(logits, batch))


class Failing:
    """A stand-in teacher: logit difference = first band / 1000; fails after ``calls``."""

    views = ["identity"]
    sha256 = "0" * 64

    def __init__(self, calls: int) -> None:
        self.calls = calls

    def logit_difference(self, raw: torch.Tensor) -> torch.Tensor:
        if self.calls == 0:
            raise KeyboardInterrupt
        self.calls -= 1
        return raw[:, 0] / 1000


def test_cache_fill_resumes_after_a_kill(tmp_path: Path) -> None:
    sample_root = generate_sample_dataset(tmp_path / "data", chips=5, test_chips=0, size=32)
    paths = DatasetPaths(sample_root, "train")
    catalog = build_catalog([RootSpec(paths)])
    chip_ids = sorted(catalog.frame["chip_id"])
    bands = ["B02", "B03", "B04", "B08"]
    hashes = content_hashes(catalog, chip_ids, bands, tmp_path)
    cache = TargetCache(tmp_path / "t", {"sha256": "x", "tta": ["identity"]})
    with pytest.raises(KeyboardInterrupt):
        cache.fill(Failing(calls=1), catalog, hashes, bands, batch_size=2, show=False)
    assert len(cache.entries) == 2
    with open(tmp_path / "t" / DATA_NAME, "ab") as stream:
        stream.write(b"\x00" * 64)  # half-written data of the killed batch
    reopened = TargetCache(tmp_path / "t", {"sha256": "x", "tta": ["identity"]})
    assert (tmp_path / "t" / DATA_NAME).stat().st_size == reopened.index["end"] * ITEM
    computed = reopened.fill(Failing(calls=100), catalog, hashes, bands, batch_size=2, show=False)
    assert computed == len(set(hashes.values())) - 2
    targets = CachedTargets(reopened, hashes)
    for chip_id in chip_ids:
        expected = read_chip(paths, chip_id, bands, with_label=False).bands[0] / 1000
        got = targets(chip_id)["teacher"]
        assert got.dtype == np.float32 and np.allclose(got, expected, rtol=1e-3, atol=1e-3)
    index = json.loads((tmp_path / "t" / "index.json").read_text())
    assert len(index["entries"]) == len(set(hashes.values()))
    with pytest.raises(DataError, match="another teacher"):
        TargetCache(tmp_path / "t", {"sha256": "y", "tta": ["identity"]})
    with pytest.raises(DataError, match="lacks"):
        CachedTargets(reopened, {"nochip": "f" * 64})

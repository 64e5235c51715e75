"""Augmentation keeps image, mask and valid mask aligned; photometric steps never clip."""

from __future__ import annotations

import numpy as np
import pytest

from oncloudn.config import AugmentConfig, AugmentStep
from oncloudn.errors import ConfigError
from oncloudn.training.augment import build_augmentation


def pattern_sample(size: int = 32) -> dict:
    rng = np.random.default_rng(0)
    mask = np.zeros((size, size), np.float32)
    mask[2:10, 3:20] = 1  # asymmetric, so any flip/rotation changes it
    mask[20:30, 25:28] = 1
    image = np.where(mask[None] == 1, 15000.0, 1000.0) + rng.integers(1, 50, (4, size, size))
    valid = np.ones((size, size), bool)
    valid[:, :2] = False
    return {"image": image.astype(np.float32), "mask": mask, "valid": valid, "chip_id": "x"}


def test_geometric_steps_keep_alignment() -> None:
    augment = build_augmentation(
        AugmentConfig(
            [AugmentStep("D4", {"p": 1.0}), AugmentStep("RandomCrop", {"height": 24, "width": 24})]
        )
    )
    sample = pattern_sample()
    changed = 0
    for seed in range(8):
        out = augment(sample, seed)
        assert out["image"].shape == (4, 24, 24) and out["mask"].shape == (24, 24)
        np.testing.assert_array_equal(out["image"][0] > 8000, out["mask"] == 1)
        assert out["valid"].dtype == bool and (out["image"][0] > 0).all()
        changed += not np.array_equal(out["mask"], sample["mask"][:24, :24])
    assert changed > 0


def test_same_seed_same_sample_and_no_clipping() -> None:
    augment = build_augmentation(
        AugmentConfig([
            AugmentStep("HorizontalFlip", {"p": 0.5}),
            AugmentStep("brightness_contrast", {"p": 1.0}),
            AugmentStep("gamma", {"p": 1.0}),
            AugmentStep("gauss_noise", {"p": 1.0}),
        ])
    )  # fmt: skip
    sample = pattern_sample()
    first, again, other = augment(sample, 5), augment(sample, 5), augment(sample, 6)
    np.testing.assert_array_equal(first["image"], again["image"])
    assert not np.array_equal(first["image"], other["image"])
    assert first["image"].max() > 10000  # reflectance above 1 survives


def test_nodata_stays_zero() -> None:
    augment = build_augmentation(AugmentConfig([AugmentStep("brightness_contrast", {"p": 1.0})]))
    sample = pattern_sample()
    sample["image"][:, 0, :] = 0
    assert (augment(sample, 1)["image"][:, 0, :] == 0).all()


def test_refuses_unknown_and_clipping_steps() -> None:
    with pytest.raises(ConfigError, match="unknown augmentation step"):
        build_augmentation(AugmentConfig([AugmentStep("Flipz")]))
    with pytest.raises(ConfigError, match="clips float"):
        build_augmentation(AugmentConfig([AugmentStep("RandomBrightnessContrast")]))
    with pytest.raises(ConfigError, match="unknown params"):
        build_augmentation(AugmentConfig([AugmentStep("gamma", {"limit": 3})]))
    assert build_augmentation(AugmentConfig([])) is None

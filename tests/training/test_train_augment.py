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


def ramp_sample(size: int = 32) -> dict:
    """Band 0 is a horizontal ramp; extra targets are the same ramp in other forms."""
    x = np.tile(np.arange(size, dtype=np.float32), (size, 1))
    image = np.stack([1000.0 + 100.0 * x] + [np.full_like(x, 2000.0)] * 3)
    return {
        "image": image.astype(np.float32),
        "mask": (x >= 16).astype(np.float32),
        "valid": np.ones((size, size), bool),
        "teacher": x.copy(),  # continuous [H, W], e.g. a cached logit difference
        "logits": np.stack([-x, x]),  # continuous [C, H, W]
        "hard": x >= 16,  # mask-like (bool)
        "chip_id": "ramp",
    }


TARGETS = {"teacher": "continuous", "logits": "continuous", "hard": "mask"}


def test_extra_targets_follow_a_rotation() -> None:
    augment = build_augmentation(
        AugmentConfig([AugmentStep("Affine", {"rotate": (37, 37), "p": 1.0})]), TARGETS
    )
    out = augment(ramp_sample(), 0)
    assert out["teacher"].shape == (32, 32) and out["teacher"].dtype == np.float32
    assert out["logits"].shape == (2, 32, 32) and out["hard"].dtype == bool
    valid = out["valid"]
    assert 0 < valid.sum() < valid.size
    # Bilinear targets move like the (bilinearly warped) image: the ramp still maps onto it
    # (to OpenCV's 1/32-pixel interpolation steps; the ramp spans 31 pixels).
    ramp = out["teacher"][valid]
    np.testing.assert_allclose(out["image"][0][valid], 1000 + 100 * ramp, atol=100 / 16)
    np.testing.assert_allclose(out["logits"][1][valid], ramp, atol=1 / 16)
    np.testing.assert_allclose(out["logits"][0][valid], -ramp, atol=1 / 16)
    assert not np.allclose(out["teacher"], ramp_sample()["teacher"])  # it did rotate
    # Nearest-neighbour targets agree with the ramp away from the 15.5 boundary.
    far = valid & (np.abs(out["teacher"] - 15.5) > 1.5)
    np.testing.assert_array_equal(out["hard"][far], out["teacher"][far] > 15.5)
    np.testing.assert_array_equal(out["mask"][far], out["teacher"][far] > 15.5)
    # Corners rotated in from outside the chip are nodata and invalid.
    assert not valid[0, 0] and not valid[-1, -1] and not valid[0, -1] and not valid[-1, 0]
    assert not valid[(out["image"] == 0).all(axis=0)].any()


@pytest.mark.parametrize("fill_mask", [0, 1])
def test_padding_is_invalid_and_targets_pad_alike(fill_mask: int) -> None:
    pad = {"min_height": 40, "min_width": 40, "fill_mask": fill_mask}
    augment = build_augmentation(AugmentConfig([AugmentStep("PadIfNeeded", pad)]), TARGETS)
    sample = ramp_sample()
    sample["valid"][5, 5] = False  # an ignored label pixel stays ignored
    out = augment(sample, 3)
    assert out["image"].shape == (4, 40, 40) and out["teacher"].shape == (40, 40)
    inside = np.zeros((40, 40), bool)
    inside[4:36, 4:36] = True
    expected = inside.copy()
    expected[9, 9] = False
    np.testing.assert_array_equal(out["valid"], expected)
    np.testing.assert_array_equal(out["teacher"][inside], sample["teacher"].ravel())
    assert (out["image"][:, ~inside] == 0).all()


def test_targets_replay_with_the_seed_and_must_be_declared() -> None:
    steps = AugmentConfig([AugmentStep("D4"), AugmentStep("RandomResizedCrop", {"size": (24, 24)})])
    augment = build_augmentation(steps, TARGETS)
    first, again = augment(ramp_sample(), 11), augment(ramp_sample(), 11)
    for key in ("image", "teacher", "logits", "hard", "valid"):
        np.testing.assert_array_equal(first[key], again[key])
    assert first["valid"].all()  # a crop inside the chip brings nothing in from outside
    with pytest.raises(ValueError, match=r"\['teacher'\] not declared"):
        build_augmentation(steps, {"logits": "continuous", "hard": "mask"})(ramp_sample(), 0)
    with pytest.raises(ValueError, match="lacks the declared"):
        build_augmentation(steps, {**TARGETS, "weights": "continuous"})(ramp_sample(), 0)
    with pytest.raises(ConfigError, match="unknown kind 'linear'"):
        build_augmentation(steps, {"teacher": "linear"})
    with pytest.raises(ConfigError, match="built-in key"):
        build_augmentation(steps, {"mask": "mask"})
    with pytest.raises(ConfigError, match="fill must be 0"):
        build_augmentation(AugmentConfig([AugmentStep("Affine", {"rotate": 10, "fill": 1})]))

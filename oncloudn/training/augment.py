"""Training augmentation on multi-band float32 chips, declared in the config.

Steps run in the declared order on a sample ``{"image": float32 [C, H, W] raw DN,
"mask": float32 [H, W], "valid": bool [H, W]}``:

- geometric albumentations classes (``D4``, ``HorizontalFlip``, ``VerticalFlip``,
  ``RandomRotate90``, ``RandomCrop``, ``RandomResizedCrop``, ``Affine``...) move image, mask and
  valid mask together (masks with nearest-neighbour interpolation);
- photometric steps of this module (``brightness_contrast``, ``gamma``, ``gauss_noise``) act on
  reflectance (DN / 10000) without clipping at 1 (clouds and snow exceed it), and keep nodata
  pixels at 0. albumentations' own pixel-level transforms are refused because they clip float
  images to [0, 1].

Every call takes a seed, so the trainer derives one per (seed, epoch, sample) and the same
epoch replays identically after a resume, whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from oncloudn.config import AugmentConfig, AugmentStep
from oncloudn.errors import ConfigError

REFLECTANCE_SCALE = 10000.0

Sample = dict[str, np.ndarray]


def _brightness_contrast(
    x: np.ndarray,
    rng: np.random.Generator,
    brightness_limit: float = 0.1,
    contrast_limit: float = 0.1,
    p: float = 0.5,
) -> np.ndarray:
    """Scale brightness by ``1 + U(-b, b)`` and contrast around the mean by ``1 + U(-c, c)``."""
    if rng.random() >= p:
        return x
    brightness = 1.0 + rng.uniform(-brightness_limit, brightness_limit)
    contrast = 1.0 + rng.uniform(-contrast_limit, contrast_limit)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return np.maximum((x - mean) * contrast + mean * brightness, 0.0)


def _gamma(
    x: np.ndarray,
    rng: np.random.Generator,
    gamma_limit: tuple[float, float] | list[float] = (80, 120),
    p: float = 0.5,
) -> np.ndarray:
    """Raise reflectance to a power ``U(gamma_limit) / 100`` (reflectance > 1 stays > 1)."""
    if rng.random() >= p:
        return x
    gamma = rng.uniform(gamma_limit[0], gamma_limit[1]) / 100.0
    return np.power(np.maximum(x, 0.0), gamma)


def _gauss_noise(
    x: np.ndarray,
    rng: np.random.Generator,
    std_range: tuple[float, float] | list[float] = (0.0, 0.01),
    p: float = 0.5,
) -> np.ndarray:
    """Add Gaussian noise with a standard deviation ``U(std_range)`` in reflectance units."""
    if rng.random() >= p:
        return x
    std = rng.uniform(std_range[0], std_range[1])
    return np.maximum(x + rng.normal(0.0, std, x.shape).astype(np.float32), 0.0)


PHOTOMETRIC: dict[str, Callable[..., np.ndarray]] = {
    "brightness_contrast": _brightness_contrast,
    "gamma": _gamma,
    "gauss_noise": _gauss_noise,
}


def _albumentations_step(step: AugmentStep) -> Any:
    import albumentations as A

    cls = getattr(A, step.name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, A.BasicTransform):
        raise ConfigError(
            f"unknown augmentation step {step.name!r}; use an albumentations geometric class "
            f"(e.g. D4, HorizontalFlip, RandomRotate90, RandomCrop, RandomResizedCrop) or one of: "
            f"{', '.join(sorted(PHOTOMETRIC))}"
        )
    if issubclass(cls, A.ImageOnlyTransform):
        raise ConfigError(
            f"augmentation step {step.name!r} is a pixel-level albumentations transform, which "
            f"clips float reflectance to [0, 1]; use one of {', '.join(sorted(PHOTOMETRIC))}"
        )
    try:
        return cls(**step.params)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"augmentation step {step.name!r}: invalid params {step.params} ({error})"
        ) from None


class Augmenter:
    """Applies declared steps to a sample with an explicit seed (see module docstring)."""

    def __init__(self, steps: list[AugmentStep]) -> None:
        import albumentations as A

        self.segments: list[tuple[str, Any]] = []
        pending: list[Any] = []
        for step in steps:
            if step.name in PHOTOMETRIC:
                if pending:
                    self.segments.append(("geometric", self._compose(A, pending)))
                    pending = []
                self._check_params(step)
                self.segments.append(("photometric", (PHOTOMETRIC[step.name], dict(step.params))))
            else:
                pending.append(_albumentations_step(step))
        if pending:
            self.segments.append(("geometric", self._compose(A, pending)))

    @staticmethod
    def _compose(A: Any, transforms: list[Any]) -> Any:
        return A.Compose(transforms, additional_targets={"valid": "mask"}, seed=0)

    @staticmethod
    def _check_params(step: AugmentStep) -> None:
        import inspect

        accepted = set(inspect.signature(PHOTOMETRIC[step.name]).parameters) - {"x", "rng"}
        unknown = sorted(set(step.params) - accepted)
        if unknown:
            raise ConfigError(
                f"augmentation step {step.name!r}: unknown params {unknown}; "
                f"valid: {sorted(accepted)}"
            )

    def __call__(self, sample: Sample, seed: int) -> Sample:
        """Augment ``sample`` (numpy, ``image`` [C, H, W] DN) reproducibly from ``seed``."""
        rng = np.random.default_rng(seed)
        image = np.ascontiguousarray(sample["image"].transpose(1, 2, 0), dtype=np.float32)
        image = image / REFLECTANCE_SCALE
        mask = np.asarray(sample["mask"], dtype=np.float32)
        valid = np.asarray(sample["valid"]).astype(np.uint8)
        for kind, segment in self.segments:
            if kind == "geometric":
                segment.set_random_seed(int(rng.integers(0, 2**31 - 1)))
                out = segment(image=image, mask=mask, valid=valid)
                image, mask, valid = out["image"], out["mask"], out["valid"]
            else:
                function, params = segment
                nodata = ~(image != 0).any(axis=2, keepdims=True)
                image = np.where(nodata, 0.0, function(image, rng, **params)).astype(np.float32)
        return {
            **sample,
            "image": np.ascontiguousarray(
                image.transpose(2, 0, 1) * REFLECTANCE_SCALE, dtype=np.float32
            ),
            "mask": np.ascontiguousarray(mask, dtype=np.float32),
            "valid": np.ascontiguousarray(valid).astype(bool),
        }


def build_augmentation(config: AugmentConfig) -> Augmenter | None:
    """The augmenter of a config, or ``None`` when it declares no steps.

    Raises:
        ConfigError: An unknown step, a clipping pixel-level albumentations transform, or
            parameters the step does not accept.
    """
    if not config.steps:
        return None
    return Augmenter(list(config.steps))

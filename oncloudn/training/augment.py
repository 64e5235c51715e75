"""Training augmentation on multi-band float32 chips, declared in the config.

Steps run in the declared order on a sample ``{"image": float32 [C, H, W] raw DN,
"mask": float32 [H, W], "valid": bool [H, W]}`` plus any extra per-pixel targets declared to
the :class:`Augmenter` (``[H, W]`` or ``[C, H, W]``), each ``mask`` (nearest neighbour, e.g.
hard teacher labels) or ``continuous`` (bilinear, e.g. cached teacher logits or pixel weights):

- geometric albumentations classes (``D4``, ``HorizontalFlip``, ``VerticalFlip``,
  ``RandomRotate90``, ``RandomCrop``, ``RandomResizedCrop``, ``Affine``, ``PadIfNeeded``...)
  move the image and every target together (the label mask and valid mask by nearest
  neighbour). Pixels that come from outside the chip (padding, the corners a rotation brings
  in, bilinear blends with them) become invalid, so no loss sees them; their image is 0
  (nodata), which is why a non-zero ``fill`` is refused;
- photometric steps of this module (``brightness_contrast``, ``gamma``, ``gauss_noise``) act on
  reflectance (DN / 10000) without clipping at 1 (clouds and snow exceed it), and keep nodata
  pixels at 0. albumentations' own pixel-level transforms are refused because they clip float
  images to [0, 1].

Every call takes a seed, so the trainer derives one per (seed, epoch, sample) and the same
epoch replays identically after a resume, whatever the number of workers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from oncloudn.config import AugmentConfig, AugmentStep
from oncloudn.errors import ConfigError
from oncloudn.runtime.bands import REFLECTANCE_SCALE

MASK = "mask"
CONTINUOUS = "continuous"
TARGET_KINDS = (MASK, CONTINUOUS)
"""Kinds of extra per-pixel targets: nearest-neighbour masks or bilinear continuous values."""

BUILTIN_KEYS = ("image", "mask", "valid")
_ALBUMENTATIONS_KIND = {MASK: "mask", CONTINUOUS: "image"}
_INSIDE = "_inside"  # a ones map moved with the image: where it falls below 1, pixels came from
_INSIDE_MIN = 0.999  # outside the chip (padding, rotation corners, bilinear blends with them)

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
    # lazy: albumentations is heavy (cv2); only augmenting needs it
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
    if np.any(np.asarray(step.params.get("fill", 0)) != 0):
        raise ConfigError(
            f"augmentation step {step.name!r}: fill must be 0 (padding is nodata, DN 0, and is "
            f"marked invalid); got fill={step.params['fill']!r}"
        )
    try:
        return cls(**step.params)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"augmentation step {step.name!r}: invalid params {step.params} ({error})"
        ) from None


class Augmenter:
    """Applies declared steps to a sample with an explicit seed (see module docstring).

    Args:
        steps: The declared steps.
        targets: Extra per-pixel keys of the samples, each ``mask`` (nearest) or
            ``continuous`` (bilinear), moved with the image by every geometric step.
    """

    def __init__(self, steps: list[AugmentStep], targets: Mapping[str, str] | None = None) -> None:
        # lazy: albumentations is heavy (cv2); only augmenting needs it
        import albumentations as A

        self.targets = check_targets(targets or {})
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

    def _compose(self, A: Any, transforms: list[Any]) -> Any:
        additional = {"valid": "mask", _INSIDE: "image"}
        additional.update({key: _ALBUMENTATIONS_KIND[kind] for key, kind in self.targets.items()})
        return A.Compose(transforms, additional_targets=additional, seed=0)

    @staticmethod
    def _check_params(step: AugmentStep) -> None:
        accepted = set(inspect.signature(PHOTOMETRIC[step.name]).parameters) - {"x", "rng"}
        unknown = sorted(set(step.params) - accepted)
        if unknown:
            raise ConfigError(
                f"augmentation step {step.name!r}: unknown params {unknown}; "
                f"valid: {sorted(accepted)}"
            )

    def __call__(self, sample: Sample, seed: int) -> Sample:
        """Augment ``sample`` (numpy, ``image`` [C, H, W] DN) reproducibly from ``seed``.

        Raises:
            ValueError: A declared target is missing, or the sample holds a per-pixel array
                that was not declared (it would silently lose its alignment).
        """
        rng = np.random.default_rng(seed)
        arrays = self._unpack(sample)
        for kind, segment in self.segments:
            if kind == "geometric":
                segment.set_random_seed(int(rng.integers(0, 2**31 - 1)))
                arrays = segment(**arrays)
            else:
                function, params = segment
                image = arrays["image"]
                nodata = ~(image != 0).any(axis=2, keepdims=True)
                arrays["image"] = np.where(nodata, 0.0, function(image, rng, **params)).astype(
                    np.float32
                )
        return self._pack(sample, arrays)

    def _unpack(self, sample: Sample) -> dict[str, np.ndarray]:
        """The sample as albumentations arrays: channels last, image in reflectance."""
        image = np.ascontiguousarray(sample["image"].transpose(1, 2, 0), dtype=np.float32)
        size = image.shape[:2]
        undeclared = [
            key
            for key, value in sample.items()
            if key not in (*BUILTIN_KEYS, *self.targets)
            and isinstance(value, np.ndarray)
            and value.shape[-2:] == size
        ]
        if undeclared:
            raise ValueError(
                f"sample has per-pixel arrays {undeclared} not declared to the augmenter; "
                f"declare them as targets ({' or '.join(TARGET_KINDS)})"
            )
        missing = sorted(set(self.targets) - set(sample))
        if missing:
            raise ValueError(f"sample lacks the declared augmentation targets {missing}")
        arrays = {
            "image": image / REFLECTANCE_SCALE,
            "mask": np.asarray(sample["mask"], dtype=np.float32),
            "valid": np.asarray(sample["valid"]).astype(np.uint8),
            _INSIDE: np.ones(size, np.float32),
        }
        for key, kind in self.targets.items():
            value = np.asarray(sample[key])
            value = value.astype(np.float32 if kind == CONTINUOUS else _mask_dtype(value))
            arrays[key] = np.ascontiguousarray(
                np.moveaxis(value, 0, -1) if value.ndim == 3 else value
            )
        return arrays

    def _pack(self, sample: Sample, arrays: dict[str, np.ndarray]) -> Sample:
        """Back to the sample layout; ``valid`` loses pixels moved in from outside the chip."""
        inside = arrays[_INSIDE] >= _INSIDE_MIN
        out = {
            **sample,
            "image": np.ascontiguousarray(
                arrays["image"].transpose(2, 0, 1) * REFLECTANCE_SCALE, dtype=np.float32
            ),
            "mask": np.ascontiguousarray(arrays["mask"], dtype=np.float32),
            "valid": np.ascontiguousarray((arrays["valid"] == 1) & inside),
        }
        for key in self.targets:
            value = arrays[key]
            if np.asarray(sample[key]).ndim == 3:
                value = np.moveaxis(value.reshape(*value.shape[:2], -1), -1, 0)
            if np.asarray(sample[key]).dtype == bool:
                value = value.astype(bool)
            out[key] = np.ascontiguousarray(value)
        return out


def _mask_dtype(value: np.ndarray) -> Any:
    """OpenCV warps uint8/uint16/int16/float32 masks; bool and wider integers travel as such."""
    if value.dtype == bool:
        return np.uint8
    if value.dtype in (np.uint8, np.uint16, np.int16, np.float32):
        return value.dtype
    return np.float32


def check_targets(targets: Mapping[str, str]) -> dict[str, str]:
    """Validate extra augmentation targets ``{key: "mask" | "continuous"}``.

    Raises:
        ConfigError: An unknown kind or a key the augmenter uses itself.
    """
    for key, kind in targets.items():
        if kind not in TARGET_KINDS:
            raise ConfigError(
                f"augmentation target {key!r}: unknown kind {kind!r}; "
                f"choose one of: {', '.join(TARGET_KINDS)}"
            )
        if key in (*BUILTIN_KEYS, _INSIDE):
            raise ConfigError(
                f"augmentation target {key!r} is a built-in key; "
                f"extra targets need other names than {', '.join(BUILTIN_KEYS)}"
            )
    return dict(targets)


def build_augmentation(
    config: AugmentConfig, targets: Mapping[str, str] | None = None
) -> Augmenter | None:
    """The augmenter of a config, or ``None`` when it declares no steps.

    Args:
        config: The declared steps.
        targets: Extra per-pixel sample keys and their kinds (see :class:`Augmenter`).

    Raises:
        ConfigError: An unknown step, a clipping pixel-level albumentations transform, or
            parameters the step does not accept, a non-zero ``fill`` or an unknown
            target kind.
    """
    check_targets(targets or {})
    if not config.steps:
        return None
    return Augmenter(list(config.steps), targets)

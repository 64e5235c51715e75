"""One post-processing setting, and the space of values a sweep compares.

A :class:`Setting` is everything the manifest holds about turning cached per-view
probabilities into a mask: the TTA variant (a preset or view list merged as the manifest's
``tta_merge``), the threshold, the pixel steps (``PostprocessSpec``) and the chip-level rules
(``ChipRules``). Its field names are the parameter names of the sweep, the CLI's ``--set`` and
the plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from oncloudn.errors import ConfigError
from oncloudn.runtime.manifest import ChipRules, Manifest, PostprocessSpec
from oncloudn.runtime.tta import TTA_PRESETS, resolve_views

PIXEL_PARAMETERS = (
    "smoothing_sigma",
    "opening",
    "closing",
    "dilation",
    "erosion",
    "min_area",
    "max_hole_area",
)
CHIP_PARAMETERS = ("min_cloud_fraction", "full_cloud_fraction")
PARAMETERS = ("tta", "threshold", *PIXEL_PARAMETERS, *CHIP_PARAMETERS)
"""Sweep order: TTA first (it changes the probabilities), then threshold, pixels, chip rules."""

DEFAULT_SPACE: dict[str, tuple[Any, ...]] = {
    "tta": ("none", "hflip", "flips", "flips4", "d4"),
    "threshold": (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7),
    "smoothing_sigma": (0.0, 1.0, 2.0, 4.0),
    "opening": (0, 1, 2, 3),
    "closing": (0, 1, 2, 3),
    "dilation": (0, 1, 2, 3, 5),
    "erosion": (0, 1, 2, 3),
    "min_area": (0, 16, 64, 256, 1024),
    "max_hole_area": (0, 16, 64, 256, 1024),
    "min_cloud_fraction": (0.0, 0.001, 0.005, 0.01, 0.02, 0.05),
    "full_cloud_fraction": (1.01, 0.99, 0.95, 0.9, 0.8),
}
"""Values compared per parameter by default (``--set NAME=v1,v2`` replaces one list)."""

QUICK_SPACE: dict[str, tuple[Any, ...]] = {
    "tta": ("none", "flips", "d4"),
    "threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "smoothing_sigma": (0.0, 2.0),
    "opening": (0, 2),
    "closing": (0, 2),
    "dilation": (0, 1, 3),
    "erosion": (0, 2),
    "min_area": (0, 64, 512),
    "max_hole_area": (0, 64, 512),
    "min_cloud_fraction": (0.0, 0.01),
    "full_cloud_fraction": (1.01, 0.9),
}
"""A smaller space (``--quick``, the notebooks' CI runs)."""


@dataclass(frozen=True)
class Setting:
    """One way of turning per-view probabilities into masks (see the module docstring).

    Attributes:
        tta: A TTA preset name or comma-separated views (``identity`` for saved
            probabilities, which have one merged "view").
        threshold: Probability threshold (``>=`` is cloud).
        smoothing_sigma, opening, closing, dilation, erosion, min_area, max_hole_area: The
            pixel steps of :class:`~oncloudn.runtime.manifest.PostprocessSpec`.
        min_cloud_fraction, full_cloud_fraction: The chip-level rules of
            :class:`~oncloudn.runtime.manifest.ChipRules`.
    """

    tta: str = "none"
    threshold: float = 0.5
    smoothing_sigma: float = 0.0
    opening: int = 0
    closing: int = 0
    dilation: int = 0
    erosion: int = 0
    min_area: int = 0
    max_hole_area: int = 0
    min_cloud_fraction: float = 0.0
    full_cloud_fraction: float = 1.01

    @property
    def views(self) -> list[str]:
        """The TTA views of :attr:`tta`."""
        return resolve_views(self.tta.split(","))

    @property
    def postprocess(self) -> PostprocessSpec:
        """The pixel steps as the manifest's spec."""
        return PostprocessSpec(**{name: getattr(self, name) for name in PIXEL_PARAMETERS})

    @property
    def chip_rules(self) -> ChipRules:
        """The chip-level rules as the manifest's spec."""
        return ChipRules(**{name: getattr(self, name) for name in CHIP_PARAMETERS})

    def with_value(self, name: str, value: Any) -> Setting:
        """A copy with one parameter changed."""
        return replace(self, **{name: value})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def changes(self, other: Setting) -> dict[str, Any]:
        """Parameters whose value differs in ``other`` (``{name: other's value}``)."""
        return {
            f.name: getattr(other, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }

    def describe(self, base: Setting | None = None) -> str:
        """``name=value`` of the parameters differing from ``base`` (default: ``Setting()``)."""
        changed = (base or Setting()).changes(self)
        return ", ".join(f"{name}={value}" for name, value in changed.items()) or "(baseline)"


def setting_from_manifest(manifest: Manifest, tta: str | None = None) -> Setting:
    """The setting a model folder's manifest currently uses (``tta`` overrides its views)."""
    values = {"tta": tta or ",".join(resolve_views(manifest.tta)), "threshold": manifest.threshold}
    values.update(asdict(manifest.postprocess))
    values.update(asdict(manifest.chip_rules))
    return Setting(**values)


def parse_overrides(items: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """``["threshold=0.4,0.5", "tta=none;d4"]`` -> ``{"threshold": (0.4, 0.5), ...}``.

    Values are comma-separated, except for ``tta``, whose variants are separated by ``;``
    (a variant may itself be a comma-separated view list).

    Raises:
        ConfigError: An item without ``=``, an unknown parameter or a value of the wrong type.
    """
    overrides: dict[str, tuple[Any, ...]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not text.strip():
            raise ConfigError(f"--set {item!r}: expected NAME=v1,v2 (e.g. threshold=0.4,0.5)")
        if name not in PARAMETERS:
            raise ConfigError(
                f"--set {item!r}: unknown parameter {name!r}; choose from {', '.join(PARAMETERS)}"
            )
        parts = [p.strip() for p in text.split(";" if name == "tta" else ",") if p.strip()]
        overrides[name] = tuple(_convert(name, part, item) for part in parts)
    return overrides


def _convert(name: str, text: str, item: str) -> Any:
    kind = {f.name: f.type for f in fields(Setting)}[name]
    try:
        if name == "tta":
            resolve_views(text.split(","))
            return text
        if kind == "int":
            return int(text)
        return float(text)
    except ValueError as error:
        raise ConfigError(f"--set {item!r}: bad value {text!r} for {name} ({error})") from None


def build_space(
    quick: bool = False,
    overrides: Mapping[str, Sequence[Any]] | None = None,
    available_views: Sequence[str] | None = None,
    strict: bool = True,
) -> dict[str, tuple[Any, ...]]:
    """The values to compare per parameter.

    Args:
        quick: Start from :data:`QUICK_SPACE` instead of :data:`DEFAULT_SPACE`.
        overrides: Replace the values of some parameters.
        available_views: The views cached for the source; TTA variants needing others are
            dropped (``None``: keep all). Saved probabilities have only ``identity``.
        strict: Refuse TTA variants of ``overrides`` that need views not cached (off for
            saved probabilities, which have no views to add).

    Raises:
        ConfigError: With ``strict``, a TTA variant given in ``overrides`` needs views that
            are not cached.
    """
    space = dict(QUICK_SPACE if quick else DEFAULT_SPACE)
    space.update({name: tuple(values) for name, values in (overrides or {}).items()})
    if available_views is not None:
        available = set(available_views)
        kept = tuple(v for v in space["tta"] if set(resolve_views(v.split(","))) <= available)
        if strict and overrides and "tta" in overrides and len(kept) < len(space["tta"]):
            missing = [v for v in space["tta"] if v not in kept]
            raise ConfigError(
                f"--set tta: variant(s) {missing} need views that are not cached (cached: "
                f"{', '.join(available_views)}); pass --views d4 to cache all eight"
            )
        space["tta"] = kept or ("none",)
    return space


__all__ = [
    "DEFAULT_SPACE",
    "PARAMETERS",
    "QUICK_SPACE",
    "Setting",
    "TTA_PRESETS",
    "build_space",
    "parse_overrides",
    "setting_from_manifest",
]

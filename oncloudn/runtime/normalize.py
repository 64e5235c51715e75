"""Named input normalizations (runtime-safe).

Every model takes raw uint16 DN ``[N, C, H, W]`` and applies its own normalization, named in
its manifest as ``{"name": ..., "params": {...}}``. Callers never normalize for a model.

- ``raw``: DN as float32, unchanged (the DrivenData benchmark's input).
- ``reflectance``: DN / 10000 (surface reflectance; clouds and snow exceed 1, never clipped).
- ``zscore_chip``: per chip and channel, (x - mean) / std over valid (non-nodata) pixels, as
  nnU-Net's ZScore normalization does per case.
- ``dataset``: (DN / 10000 - mean[c]) / std[c] with fixed per-band ``mean`` and ``std`` lists
  (in reflectance units) from ``params``.
"""

from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch

from .bands import REFLECTANCE_SCALE


def _raw(x: torch.Tensor, params: dict) -> torch.Tensor:
    return x.float()


def _reflectance(x: torch.Tensor, params: dict) -> torch.Tensor:
    return x.float() / float(params.get("scale", REFLECTANCE_SCALE))


def _zscore_chip(x: torch.Tensor, params: dict) -> torch.Tensor:
    x = x.float()
    valid = (x != 0).any(dim=1, keepdim=True).float()  # [N, 1, H, W]
    count = valid.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)
    mean = (x * valid).sum(dim=(2, 3), keepdim=True) / count
    var = (((x - mean) * valid) ** 2).sum(dim=(2, 3), keepdim=True) / count
    std = var.sqrt().clamp(min=float(params.get("eps", 1e-3)))
    return (x - mean) / std


def _dataset(x: torch.Tensor, params: dict) -> torch.Tensor:
    if "mean" not in params or "std" not in params:
        raise ValueError(
            "normalization 'dataset' needs params 'mean' and 'std' (one value per band, "
            "in reflectance units), e.g. {'mean': [0.1, 0.1, 0.1, 0.2], 'std': [...]}"
        )
    mean = torch.tensor(params["mean"], dtype=torch.float32, device=x.device)
    std = torch.tensor(params["std"], dtype=torch.float32, device=x.device)
    if mean.numel() != x.shape[1] or std.numel() != x.shape[1]:
        raise ValueError(
            f"normalization 'dataset' has {mean.numel()} means and {std.numel()} stds for "
            f"{x.shape[1]} bands"
        )
    scaled = x.float() / float(params.get("scale", REFLECTANCE_SCALE))
    return (scaled - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


NORMALIZATIONS: dict[str, Callable[[torch.Tensor, dict], torch.Tensor]] = {
    "raw": _raw,
    "reflectance": _reflectance,
    "zscore_chip": _zscore_chip,
    "dataset": _dataset,
}


def normalize(x: torch.Tensor, name: str, params: Optional[dict] = None) -> torch.Tensor:
    """Apply the named normalization to raw DN ``[N, C, H, W]`` and return float32.

    Raises:
        ValueError: For an unknown name (the message lists the valid ones).
    """
    if name not in NORMALIZATIONS:
        raise ValueError(
            "unknown normalization {!r}; choose one of: {}".format(
                name, ", ".join(sorted(NORMALIZATIONS))
            )
        )
    return NORMALIZATIONS[name](x, params or {})


def normalize_input(
    raw: torch.Tensor, bands: Sequence[str], normalization: Optional[dict[str, Any]]
) -> torch.Tensor:
    """Check raw DN ``[N, C, H, W]`` against ``bands`` and apply a manifest's normalization.

    Args:
        raw: Raw DN in ``bands`` order.
        bands: The model's band names.
        normalization: The manifest's ``{"name": ..., "params": {...}}`` (``None``: raw).

    Raises:
        ValueError: A shape other than ``[N, len(bands), H, W]``, or an unknown name.
    """
    if raw.dim() != 4 or raw.shape[1] != len(bands):
        raise ValueError(
            "expected raw DN [N, {}, H, W] in band order {}, got shape {}".format(
                len(bands), ", ".join(bands), tuple(raw.shape)
            )
        )
    spec = normalization or {"name": "raw"}
    return normalize(raw.float(), spec.get("name", "raw"), spec.get("params"))

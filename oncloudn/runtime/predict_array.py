"""The array level of prediction (runtime-safe): raw DN -> probabilities -> masks.

Everything that predicts (``submission/main.py``, ``oncloudn predict``, ``flag-labels``, the
trainer's validation and out-of-fold writing) goes through these functions; only the forward
pass is injected:

- a **probability function** maps raw DN ``[N, C, H, W]`` (a float tensor on the model's
  device) to cloud probabilities ``[N, H, W]``. :func:`model_probability_fn` makes one from a
  loaded model (its TTA views, an optional autocast context); the trainer passes its own
  (a DDP or channels-last network, its own head mapping).
- :func:`predict_probabilities` runs it on any ``H x W``: the input is padded by reflection
  to a multiple of the network's stride (zero padding would read as nodata) and the output
  cropped back. Rotation and transpose views of TTA need square inputs: on a non-square
  input they are dropped (flips and ``rot180`` stay), see :func:`views_for_shape`.
- :func:`finalize_mask` turns one probability map into a 0/1 mask in the manifest's fixed
  order: pixel post-processing, then chip-level rules, then nodata pixels set to 0.
"""

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .manifest import Manifest
from .postprocess import postprocess
from .tta import resolve_views

ProbabilityFn = Callable[[torch.Tensor], torch.Tensor]

# Views that keep an H x W input H x W whatever its shape.
SHAPE_PRESERVING_VIEWS = ("identity", "hflip", "vflip", "rot180")


def views_for_shape(views: Sequence[str], height: int, width: int) -> list[str]:
    """The views of ``views`` that apply to an ``height x width`` input.

    A square input keeps them all; a non-square one keeps only the shape-preserving views
    (identity, flips, ``rot180``): a 90-degree rotation or a transpose would hand the network
    a ``W x H`` input and its prediction could not be averaged with the others pixel by pixel.
    At least ``identity`` remains.
    """
    if height == width:
        return list(views)
    kept = [view for view in views if view in SHAPE_PRESERVING_VIEWS]
    return kept or ["identity"]


def model_probability_fn(
    model: Any,
    views: Optional[Sequence[str]] = None,
    context: Optional[Callable[[], Any]] = None,
) -> ProbabilityFn:
    """A probability function of a loaded model under TTA.

    Args:
        model: Anything with ``predict_proba(raw, views)`` and a ``manifest``.
        views: TTA views (default: the manifest's); dropped per input shape as described in
            :func:`views_for_shape`.
        context: A factory of a context manager entered around each call (e.g. CUDA
            autocast); default none.
    """
    manifest = getattr(model, "manifest", None)
    chosen = resolve_views(views if views is not None else getattr(manifest, "tta", None))

    def probability(x: torch.Tensor) -> torch.Tensor:
        shaped = views_for_shape(chosen, int(x.shape[-2]), int(x.shape[-1]))
        with torch.no_grad(), context() if context else contextlib.nullcontext():
            return model.predict_proba(x, shaped)

    return probability


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``[N, C, H, W]`` at the bottom and right to multiples of ``multiple``.

    Reflection where the input is large enough, else edge replication (reflection needs a
    pad smaller than the side).
    """
    height, width = int(x.shape[-2]), int(x.shape[-1])
    pad_h = -height % max(1, multiple)
    pad_w = -width % max(1, multiple)
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, [0, pad_w, 0, pad_h], mode=mode)


def predict_probabilities(
    probability_fn: ProbabilityFn,
    raw: np.ndarray,
    device: str = "cpu",
    multiple: int = 1,
) -> np.ndarray:
    """Cloud probabilities ``[N, H, W]`` (float32) of raw DN ``[N, C, H, W]`` of any size.

    Args:
        probability_fn: See :func:`model_probability_fn`.
        raw: Raw DN (uint16 or float array, or a tensor) in the model's band order.
        device: Where the input goes.
        multiple: The network's stride: ``H`` and ``W`` are padded to its multiples.
    """
    if isinstance(raw, torch.Tensor):
        x = raw.to(device).float()
    else:
        x = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)).to(device)
    height, width = int(x.shape[-2]), int(x.shape[-1])
    probability = probability_fn(pad_to_multiple(x, multiple))
    return probability[:, :height, :width].float().cpu().numpy()


def input_multiple(model: Any) -> int:
    """The stride a model's input sides must be multiples of (``1`` when it declares none)."""
    return int(getattr(model, "input_multiple", 1) or 1)


def finalize_mask(
    probability: np.ndarray,
    nodata: Optional[np.ndarray],
    manifest: Manifest,
    chip_rules: bool = True,
) -> np.ndarray:
    """A uint8 0/1 mask of one probability map ``[H, W]``, in the manifest's fixed order.

    Args:
        probability: Cloud probability ``[H, W]``.
        nodata: ``True`` where the input has no data (or ``None``).
        manifest: Threshold, pixel post-processing and chip-level rules.
        chip_rules: Apply the chip-level rules (off for windows of a larger scene, where a
            window's cloud fraction means nothing).
    """
    rules = manifest.chip_rules if chip_rules else None
    return postprocess(probability, nodata, manifest.threshold, manifest.postprocess, rules)

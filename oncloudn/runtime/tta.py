"""Test-time augmentation over the 8 symmetries of the square (runtime-safe).

Views act on the last two axes (``[..., H, W]``) of torch tensors. ``apply_view`` transforms
the input, ``invert_view`` maps a prediction made on the transformed input back.

Views: ``identity``, ``hflip`` (left-right), ``vflip`` (up-down), ``rot90``, ``rot180``,
``rot270`` (counter-clockwise), ``transpose`` (swap H and W), ``antitranspose`` (transpose
across the other diagonal). Presets (``TTA_PRESETS``): ``none``, ``hflip``, ``flips``,
``flips4``, ``d4``.
"""

from collections.abc import Iterable
from typing import Callable, Union

import torch

D4_VIEWS = (
    "identity",
    "hflip",
    "vflip",
    "rot90",
    "rot180",
    "rot270",
    "transpose",
    "antitranspose",
)

TTA_PRESETS: dict[str, list[str]] = {
    "none": ["identity"],
    "hflip": ["identity", "hflip"],
    "flips": ["identity", "hflip", "vflip"],
    "flips4": ["identity", "hflip", "vflip", "rot180"],
    "d4": list(D4_VIEWS),
}

TTA_MERGES = ("probability", "logit")

# Order in which views are kept when a time budget forces fewer views (see step_down_views).
VIEW_PRIORITY = (
    "identity",
    "hflip",
    "vflip",
    "rot180",
    "transpose",
    "rot90",
    "rot270",
    "antitranspose",
)


def _dims(x: torch.Tensor):
    return [x.dim() - 2, x.dim() - 1]


def _check_view(name: str) -> None:
    if name not in D4_VIEWS:
        raise ValueError(
            "unknown TTA view {!r}; choose from: {} (or a preset: {})".format(
                name, ", ".join(D4_VIEWS), ", ".join(sorted(TTA_PRESETS))
            )
        )


def apply_view(x: torch.Tensor, name: str) -> torch.Tensor:
    """Transform ``x`` (``[..., H, W]``) by the named view.

    Raises:
        ValueError: Unknown view name (the message lists the valid ones).
    """
    _check_view(name)
    h, w = _dims(x)
    if name == "identity":
        return x
    if name == "hflip":
        return torch.flip(x, [w])
    if name == "vflip":
        return torch.flip(x, [h])
    if name == "rot90":
        return torch.rot90(x, 1, [h, w])
    if name == "rot180":
        return torch.flip(x, [h, w])
    if name == "rot270":
        return torch.rot90(x, 3, [h, w])
    if name == "transpose":
        return x.transpose(h, w)
    return torch.flip(x.transpose(h, w), [h, w])  # antitranspose


_INVERSE = {"rot90": "rot270", "rot270": "rot90"}


def invert_view(y: torch.Tensor, name: str) -> torch.Tensor:
    """Undo the named view on a prediction ``y`` (``[..., H, W]``).

    Raises:
        ValueError: Unknown view name.
    """
    _check_view(name)
    return apply_view(y, _INVERSE.get(name, name))


def resolve_views(views: Union[str, Iterable[str], None]) -> list[str]:
    """Expand a preset name or a list of view/preset names into a list of unique views.

    ``None`` or an empty list means ``["identity"]``.

    Raises:
        ValueError: An unknown view or preset name.
    """
    if views is None:
        return ["identity"]
    if isinstance(views, str):
        views = [views]
    resolved: list[str] = []
    for name in views:
        expanded = TTA_PRESETS.get(name, [name])
        for view in expanded:
            _check_view(view)
            if view not in resolved:
                resolved.append(view)
    return resolved or ["identity"]


def step_down_views(views: list[str]) -> list[str]:
    """Halve the number of views (8 -> 4 -> 2 -> 1), keeping the most useful ones.

    Views are ranked by ``VIEW_PRIORITY`` (identity first, then the flips).
    """
    if len(views) <= 1:
        return list(views)
    keep = (len(views) + 1) // 2
    ranked = sorted(views, key=VIEW_PRIORITY.index)
    return ranked[:keep]


def merge_logits(logits: torch.Tensor) -> torch.Tensor:
    """Cloud probability ``[N, H, W]`` of 2-class logits ``[N, 2, H, W]``."""
    return torch.softmax(logits.float(), dim=1)[:, 1]


def predict_with_tta(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    views: Union[str, Iterable[str], None] = None,
    merge: str = "probability",
) -> torch.Tensor:
    """Cloud probability ``[N, H, W]`` of ``fn`` averaged over TTA views.

    Args:
        fn: Maps an input ``[N, C, H, W]`` to 2-class logits ``[N, 2, H, W]`` (clear, cloud).
        x: The input.
        views: View names or a preset (see ``resolve_views``).
        merge: ``probability`` (mean of per-view probabilities) or ``logit`` (softmax of the
            mean of per-view logits).

    Raises:
        ValueError: Unknown view or merge.
    """
    if merge not in TTA_MERGES:
        raise ValueError(
            "unknown tta_merge {!r}; choose one of: {}".format(merge, ", ".join(TTA_MERGES))
        )
    names = resolve_views(views)
    total = None
    for name in names:
        logits = invert_view(fn(apply_view(x, name)), name).float()
        value = logits if merge == "logit" else merge_logits(logits)
        total = value if total is None else total + value
    mean = total / float(len(names))
    return merge_logits(mean) if merge == "logit" else mean

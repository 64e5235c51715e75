"""nnU-Net v2's 2d inference pipeline, step by step, with its exact numerics (no nnunetv2).

For one image ``[C, H, W]`` (nnunetv2 2.8.1, ``nnUNetPredictor`` and ``DefaultPreprocessor``):

1. ``crop_to_nonzero``: the bounding box of pixels nonzero in any channel (holes filled as
   nnU-Net does; the whole image when every pixel is 0); the image is cropped to it.
2. Per channel ``ZScoreNormalization`` of the cropped float32 image: ``(x - mean) / max(std,
   1e-8)`` over the whole crop, or only over the nonzero mask when the plans'
   ``use_mask_for_norm`` is true (pixels outside it stay 0). Done in numpy on the same array
   layout as nnU-Net, so means and deviations agree to the bit.
3. Sliding window: zero-pad to at least the patch size (content centred), tiles at nnU-Net's
   steps (``tile_step`` x patch, default 0.5), each tile's logits averaged over mirrorings
   (every non-empty combination of the allowed axes; logits, not probabilities) and weighted
   by a Gaussian (sigma = patch / 8, float16); logits and weights are accumulated in float16
   and divided, as nnU-Net does (so results match it to the bit, float16 rounding included).
4. Folds: the float16 logits of each fold are summed and divided by the number of folds
   (nnU-Net averages logits, then applies softmax once).
5. Outside the crop box nnU-Net's probabilities are background 1, others 0.

On CUDA the network runs under ``torch.autocast`` as nnU-Net's predictor does.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Sequence

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes, gaussian_filter
from torch import nn

Box = tuple[slice, slice]


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """nnU-Net's ``create_nonzero_mask`` of ``[C, 1, H, W]``: nonzero in any channel, holes
    filled on the ``[1, H, W]`` volume."""
    return binary_fill_holes(np.any(data != 0, axis=0))


def mask_box(mask: np.ndarray) -> Box:
    """Row and column slices of the half-open box of ``mask`` ``[1, H, W]`` (the full extent
    along an axis where nothing is set, as nnU-Net's ``get_bbox_from_mask``)."""
    plane = mask[0]
    rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    row = slice(int(rows[0]), int(rows[-1]) + 1) if rows.size else slice(0, plane.shape[0])
    col = slice(int(cols[0]), int(cols[-1]) + 1) if cols.size else slice(0, plane.shape[1])
    return row, col


def preprocess(image: np.ndarray, use_mask_for_norm: Sequence[bool]) -> tuple[np.ndarray, Box]:
    """Crop and z-score one image as nnU-Net does.

    Args:
        image: Raw values ``[C, H, W]`` (any numeric dtype).
        use_mask_for_norm: The plans' per-channel flags.

    Returns:
        The normalized crop ``[C, 1, h, w]`` (float32, C-contiguous) and its box.
    """
    data = np.ascontiguousarray(image.astype(np.float32)[:, None])  # nnU-Net's float32 copy
    mask = nonzero_mask(data)
    box = mask_box(mask)
    mask = mask[(slice(None), *box)]  # nnU-Net keeps it as seg >= 0
    data = data[(slice(None), slice(None), *box)]
    for channel in range(data.shape[0]):
        plane = data[channel]
        if use_mask_for_norm[channel]:
            mean = plane[mask].mean()
            std = plane[mask].std()
            plane[mask] = (plane[mask] - mean) / max(std, 1e-8)
        else:
            mean = plane.mean()
            std = plane.std()
            plane -= mean
            plane /= max(std, 1e-8)
        data[channel] = plane
    return np.ascontiguousarray(data), box


@functools.lru_cache(maxsize=4)
def gaussian_weights(patch: tuple[int, int]) -> torch.Tensor:
    """nnU-Net's ``compute_gaussian(patch, 1/8, value_scaling_factor=10)`` in float16 (CPU)."""
    weights = np.zeros(patch)
    weights[tuple(size // 2 for size in patch)] = 1
    weights = gaussian_filter(weights, [size / 8 for size in patch], 0, mode="constant", cval=0)
    weights /= np.max(weights) / 10
    tensor = torch.from_numpy(weights).to(dtype=torch.float16)
    tensor[tensor == 0] = torch.min(tensor[tensor != 0])
    return tensor


def window_starts(length: int, patch: int, step: float) -> list[int]:
    """nnU-Net's ``compute_steps_for_sliding_window`` along one axis (``length >= patch``)."""
    count = int(np.ceil((length - patch) / (patch * step))) + 1
    if count == 1:
        return [0]
    stride = (length - patch) / (count - 1)
    return [int(np.round(stride * index)) for index in range(count)]


def pad_to_patch(data: torch.Tensor, patch: Sequence[int]) -> tuple[torch.Tensor, Box]:
    """Zero-pad ``[C, 1, h, w]`` to at least ``patch``, content centred (``pad_nd_image``)."""
    pads, box = [], []
    for size, target in zip(data.shape[-2:], patch, strict=True):
        extra = max(int(target), size) - size
        below = extra // 2
        pads.append((below, extra - below))
        box.append(slice(below, below + size))
    if any(sum(pair) for pair in pads):
        flat = [pads[1][0], pads[1][1], pads[0][0], pads[0][1]]
        data = torch.nn.functional.pad(data, flat, "constant", 0)
    return data, (box[0], box[1])


def mirrored_logits(
    network: nn.Module, tile: torch.Tensor, mirror_axes: Sequence[int] | None
) -> torch.Tensor:
    """Logits of ``tile`` ``[1, C, p, p]`` averaged over nnU-Net's mirror combinations."""
    prediction = network(tile)
    if not mirror_axes:
        return prediction
    axes = [axis + 2 for axis in mirror_axes]
    combos = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
    for dims in combos:
        prediction += torch.flip(network(torch.flip(tile, dims)), dims)
    prediction /= len(combos) + 1
    return prediction


def sliding_window_logits(
    network: nn.Module,
    data: torch.Tensor,
    patch: Sequence[int],
    step: float = 0.5,
    mirror_axes: Sequence[int] | None = (0, 1),
) -> torch.Tensor:
    """Gaussian-weighted sliding-window logits ``[K, 1, h, w]`` (float16) of ``[C, 1, h, w]``.

    The network runs on ``data``'s device; accumulation happens there in float16.
    """
    padded, unpad = pad_to_patch(data, patch)
    gaussian = gaussian_weights(tuple(int(p) for p in patch)).to(padded.device)
    rows = window_starts(padded.shape[2], int(patch[0]), step)
    cols = window_starts(padded.shape[3], int(patch[1]), step)
    logits = n_predictions = None
    cuda = padded.device.type == "cuda"
    for top, left in itertools.product(rows, cols):
        window = (slice(top, top + int(patch[0])), slice(left, left + int(patch[1])))
        tile = torch.clone(padded[(slice(None), 0, *window)][None])
        with torch.autocast("cuda", enabled=True) if cuda else contextlib.nullcontext():
            prediction = mirrored_logits(network, tile, mirror_axes)[0]
        if logits is None:
            shape = (prediction.shape[0], *padded.shape[1:])
            logits = torch.zeros(shape, dtype=torch.half, device=padded.device)
            n_predictions = torch.zeros(padded.shape[1:], dtype=torch.half, device=padded.device)
        prediction *= gaussian
        logits[(slice(None), 0, *window)] += prediction
        n_predictions[(0, *window)] += gaussian
    torch.div(logits, n_predictions, out=logits)
    if torch.any(torch.isinf(logits)):
        raise RuntimeError("infinite logits in the sliding window (as nnU-Net would report)")
    return logits[(slice(None), slice(None), *unpad)]


def fold_logits(
    network: nn.Module,
    states: Sequence[dict[str, torch.Tensor]],
    data: torch.Tensor,
    patch: Sequence[int],
    step: float = 0.5,
    mirror_axes: Sequence[int] | None = (0, 1),
) -> torch.Tensor:
    """Logits ``[K, 1, h, w]`` (float16) averaged over folds, loading each fold's weights."""
    total = None
    for state in states:
        network.load_state_dict(state)
        logits = sliding_window_logits(network, data, patch, step, mirror_axes).cpu()
        total = logits if total is None else total.add_(logits)
    if len(states) > 1:
        total /= len(states)
    return total

"""Seeded helpers of the scene tests: a tiny U-Net folder and the whole-image reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch

from oncloudn.models.folder import load_model_folder, save_model_folder
from oncloudn.runtime.manifest import Manifest, PostprocessSpec
from oncloudn.runtime.predict_array import (
    finalize_mask,
    input_multiple,
    model_probability_fn,
    predict_probabilities,
)
from oncloudn.runtime.unet import UNet

TINY_WIDTHS = [4, 8]
# Every pixel step, so that window and strip edges would show if they mattered.
POSTPROCESS = PostprocessSpec(
    smoothing_sigma=1.0, opening=1, closing=1, dilation=1, min_area=40, max_hole_area=30
)


def tiny_unet_folder(
    folder: Path,
    seed: int = 0,
    postprocess: PostprocessSpec | None = None,
    threshold: float = 0.5,
) -> Path:
    """A seeded untrained 2-level U-Net (widths 4, 8) with all pixel steps on."""
    torch.manual_seed(seed)
    network = UNet(4, 1, widths=TINY_WIDTHS)
    manifest = Manifest(
        name=f"tiny-unet-{seed}",
        architecture={"name": "unet", "args": {"widths": TINY_WIDTHS}},
        normalization={"name": "reflectance", "params": {}},
        threshold=float(threshold),
        postprocess=postprocess or POSTPROCESS,
    )
    return save_model_folder(folder, manifest, network)


def whole_image_probability(model_dir: Path, raw: np.ndarray, offset: float = 0.0):
    """Cloud probability ``[H, W]`` of the whole ``[C, H, W]`` image (nodata: 0) and nodata."""
    model = load_model_folder(model_dir)
    nodata = np.all(raw == 0, axis=0)
    shifted = np.maximum(raw.astype(np.float32) + offset, 0.0)
    probability = predict_probabilities(
        model_probability_fn(model), shifted[None], "cpu", input_multiple(model)
    )[0]
    probability[nodata] = 0.0
    return probability, nodata, model.manifest


def median_probability(model_dir: Path, raw: np.ndarray) -> float:
    """The median whole-image probability over valid pixels."""
    probability, nodata, _ = whole_image_probability(model_dir, raw)
    return float(np.median(probability[~nodata]))


def whole_image_mask(model_dir: Path, raw: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """The reference: the array-level core on the whole ``[C, H, W]`` image at once.

    Nodata pixels (every band 0) count as probability 0 before post-processing, as in a scene.
    """
    probability, nodata, manifest = whole_image_probability(model_dir, raw, offset)
    return finalize_mask(probability, nodata, manifest, chip_rules=False)


def read_mask(path: Path) -> tuple[np.ndarray, dict]:
    """A written mask and its profile."""
    with rasterio.open(path) as src:
        return src.read(1), dict(src.profile)

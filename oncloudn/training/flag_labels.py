"""Rank labelled chips by disagreement between predictions and labels (label-noise review).

The predictions come from out-of-fold files (each chip predicted by a model that never
trained on it: the honest choice) or from running a model folder over the chips. For each
chip: Jaccard of the thresholded prediction against the label, the same against the
*inverted* label, cloud fractions of both, and ``likely_inverted`` when the label has both
classes and the inverted label fits the prediction clearly better.
``disagreement = 1 - jaccard`` (an empty union counts as agreement); chips are ranked by it,
ties broken by the cloud-fraction difference.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from oncloudn.data.chips import DatasetPaths, list_chips, read_chip
from oncloudn.data.dataset import CloudDataset
from oncloudn.errors import DataError
from oncloudn.models.folder import load_model_folder, read_model_manifest
from oncloudn.runtime.atomic import atomic_path
from oncloudn.scoring.metric import chip_counts
from oncloudn.training.oof import read_oof, read_oof_folder

logger = logging.getLogger(__name__)

MIXED_LABEL = (0.01, 0.99)
"""Cloud fractions between which a label can be called inverted (an all-clear or all-cloud
label disagreeing with the prediction is flagged by ``disagreement`` alone)."""

FLAG_COLUMNS = (
    "chip_id",
    "rank",
    "location",
    "disagreement",
    "jaccard",
    "inverted_jaccard",
    "label_cloud_fraction",
    "pred_cloud_fraction",
    "fraction_diff",
    "likely_inverted",
)


def _jaccard(pred: np.ndarray, label: np.ndarray) -> float:
    counts = chip_counts(pred, label)
    return counts.intersection / counts.union if counts.union else 1.0


def chip_disagreement(probability: np.ndarray, label: np.ndarray, threshold: float = 0.5) -> dict:
    """Per-chip agreement figures of a cloud probability ``[H, W]`` with a label ``[H, W]``."""
    if probability.shape != label.shape:
        raise DataError(
            f"prediction shape {probability.shape} differs from label shape {label.shape}"
        )
    pred = probability >= threshold
    cloud = label == 1
    valid = label != 255
    jaccard = _jaccard(pred & valid, cloud)
    inverted = _jaccard(pred & valid, ~cloud & valid)
    n_valid = max(1, int(valid.sum()))
    label_fraction = float(cloud.sum()) / n_valid
    pred_fraction = float((pred & valid).sum()) / n_valid
    return {
        "disagreement": 1.0 - jaccard,
        "jaccard": jaccard,
        "inverted_jaccard": inverted,
        "label_cloud_fraction": label_fraction,
        "pred_cloud_fraction": pred_fraction,
        "fraction_diff": abs(pred_fraction - label_fraction),
        "likely_inverted": bool(
            MIXED_LABEL[0] < label_fraction < MIXED_LABEL[1] and inverted > max(0.5, jaccard + 0.25)
        ),
    }


def flag_labels(
    probabilities: Mapping[str, np.ndarray], paths: DatasetPaths, threshold: float = 0.5
) -> pd.DataFrame:
    """Rank the chips of ``probabilities`` by disagreement with their labels in ``paths``.

    Returns:
        A frame with :data:`FLAG_COLUMNS`, most suspicious chip first (rank 1).

    Raises:
        DataError: No chip of the predictions exists in the dataset.
    """
    chips = list_chips(paths).set_index("chip_id")
    known = [chip_id for chip_id in sorted(probabilities) if chip_id in chips.index]
    if not known:
        raise DataError(
            f"none of the {len(probabilities)} predicted chips exists in {paths.features_dir}; "
            "pass the dataset root the predictions were made on"
        )
    if len(known) < len(probabilities):
        logger.warning(
            "%d predicted chip(s) are not in %s (skipped)",
            len(probabilities) - len(known),
            paths.root,
        )
    rows = []
    for chip_id in tqdm(known, desc="flag-labels", leave=False):
        label = read_chip(paths, chip_id, with_label=True).label
        row = chip_disagreement(probabilities[chip_id], label, threshold)
        rows.append({"chip_id": chip_id, "location": chips.loc[chip_id, "location"], **row})
    frame = pd.DataFrame(rows).sort_values(
        ["disagreement", "fraction_diff", "chip_id"], ascending=[False, False, True]
    )
    frame["rank"] = np.arange(1, len(frame) + 1)
    return frame[list(FLAG_COLUMNS)].reset_index(drop=True)


def model_probabilities(
    folder: str | Path, paths: DatasetPaths, device: str = "cpu", batch_size: int = 4
) -> dict[str, np.ndarray]:
    """Cloud probabilities of every chip of ``paths`` from a model folder (its TTA)."""
    model = load_model_folder(folder, device)
    dataset = CloudDataset(paths, bands=model.bands, with_labels=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out: dict[str, np.ndarray] = {}
    for batch in tqdm(loader, desc="predict", leave=False):
        proba = model.predict_proba(batch["image"].to(device)).float().cpu().numpy()
        for chip_id, value in zip(batch["chip_id"], proba, strict=True):
            out[chip_id] = value
    return out


def load_predictions(
    source: str | Path, paths: DatasetPaths, device: str = "cpu"
) -> tuple[dict[str, np.ndarray], float | None]:
    """Probabilities from an OOF ``.npz``, an OOF/run folder, or a model folder.

    Returns:
        ``(probabilities, threshold of the model folder or None)``.

    Raises:
        FileNotFoundError: ``source`` is none of those.
    """
    source = Path(source)
    if source.is_file() and source.suffix == ".npz":
        return read_oof(source), None
    if (source / "manifest.json").is_file():
        threshold = read_model_manifest(source).threshold
        return model_probabilities(source, paths, device), threshold
    if source.is_dir():
        return read_oof_folder(source), None
    raise FileNotFoundError(
        f"{source} is neither an OOF .npz file, a run/OOF folder (oof/fold_*.npz) nor a "
        "model folder (manifest.json)"
    )


def write_flags(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the ranking as CSV atomically (first column ``chip_id``: usable as exclude list)."""
    path = Path(path)
    with atomic_path(path) as temp, open(temp, "w", newline="", encoding="utf-8") as stream:
        frame.to_csv(stream, index=False, float_format="%.4f", lineterminator="\n")
    return path

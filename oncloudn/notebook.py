"""What the notebooks in ``notebooks/`` call: data and model discovery, a tiny model, figures.

The notebooks hold parameters, calls and plots only; everything else lives here or in the
library (the sweep in :mod:`oncloudn.inference.sweep`, scoring in :mod:`oncloudn.scoring`).

- :func:`ci_mode`: ``ONCLOUDN_NOTEBOOK_CI=1`` asks for the smallest sizes (CI runs).
- :func:`real_labeled_root`, :func:`teacher_dir`: the real labelled chips in
  ``../shared/data`` and the ukis-csmask teacher folder (``teachers/ukis``), when present.
- :func:`tiny_sample_model`: sample data + a tiny U-Net trained on it (reused when present).
- :func:`score_models`: pooled Jaccard with intervals of model folders on labelled chips,
  and their masks (teacher against student).
- :func:`plot_chip_rows`: RGB / label / nodata / masks of some chips.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oncloudn.config import load_config
from oncloudn.data.chips import DatasetPaths, list_chips, read_chip
from oncloudn.data.sample import INFO_NAME, generate_sample_dataset
from oncloudn.demo import repo_file
from oncloudn.models.folder import load_model_folder
from oncloudn.runtime.predict import predict_chips
from oncloudn.scoring.report import score_arrays
from oncloudn.training.flag_plot import RGB_BANDS, rgb_view
from oncloudn.training.oof import read_oof_folder
from oncloudn.training.trainer import train

logger = logging.getLogger(__name__)

CI_VARIABLE = "ONCLOUDN_NOTEBOOK_CI"
WORK_VARIABLE = "ONCLOUDN_NOTEBOOK_WORK"
REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_LABELED = REPO_ROOT.parent / "shared" / "data" / "oncloudn-real-labeled"
TEACHER_DIR = REPO_ROOT / "teachers" / "ukis"


def ci_mode() -> bool:
    """``True`` when ``ONCLOUDN_NOTEBOOK_CI`` is set to a true value (smallest sizes)."""
    return os.environ.get(CI_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def work_dir(name: str) -> Path:
    """A notebook's working folder: ``$ONCLOUDN_NOTEBOOK_WORK/<name>`` or ``notebook_runs/<name>``
    at the repository root (git-ignored)."""
    base = os.environ.get(WORK_VARIABLE) or str(REPO_ROOT / "notebook_runs")
    return Path(base) / name


def real_labeled_root(root: str | os.PathLike | None = None) -> Path | None:
    """The real labelled chips (default ``../shared/data/oncloudn-real-labeled``), if present."""
    path = Path(root) if root else REAL_LABELED
    return path if (path / "train_labels").is_dir() else None


def teacher_dir(folder: str | os.PathLike | None = None) -> Path | None:
    """The ukis-csmask teacher folder (default ``teachers/ukis``), if it is a model folder.

    Create it with ``oncloudn teachers add ukis-csmask teachers/ukis``.
    """
    path = Path(folder) if folder else TEACHER_DIR
    return path if (path / "manifest.json").is_file() else None


@dataclass
class TinyModel:
    """Sample data and a tiny model trained on it.

    Attributes:
        data_root: The sample dataset root (train and test splits).
        model_dir: The trained model folder (fold 0).
        run_dir: The training run (``oof/fold_0.npz`` holds out-of-fold probabilities).
    """

    data_root: Path
    model_dir: Path
    run_dir: Path


def tiny_sample_model(
    work_dir: str | os.PathLike,
    chips: int = 24,
    size: int = 128,
    epochs: int = 40,
    steps_per_epoch: int = 4,
    label_noise: float = 0.1,
    n_locations: int = 3,
    seed: int = 0,
) -> TinyModel:
    """Generate sample data and train a small U-Net on it (``configs/tiny_cpu.yaml``).

    Both are reused when ``work_dir`` already holds them, so a notebook re-runs quickly.

    Args:
        work_dir: Folder for ``data/`` and ``run/``.
        chips: Training chips.
        size: Chip side in pixels.
        epochs: Training epochs.
        steps_per_epoch: At most this many optimizer steps per epoch.
        label_noise: Share of training chips with a corrupted label.
        n_locations: Locations of the sample chips.
        seed: Seed of the data and the trainer.
    """
    work = Path(work_dir)
    data_root = work / "data"
    if not (data_root / "train_metadata.csv").is_file():
        generate_sample_dataset(
            data_root,
            chips=chips,
            test_chips=4,
            seed=seed,
            size=size,
            label_noise=label_noise,
            force=True,
        )
    run_dir = work / "run"
    model_dir = run_dir / "fold_0"
    if not (model_dir / "manifest.json").is_file():
        config = load_config(
            repo_file("configs/tiny_cpu.yaml"),
            [
                f"data.root={data_root}",
                f"trainer.out_dir={run_dir}",
                f"trainer.seed={seed}",
                f"trainer.epochs={epochs}",
                f"trainer.max_steps_per_epoch={steps_per_epoch}",
                f"trainer.val_every={max(1, epochs // 4)}",
                "trainer.cpu_threads=1",
                "model.args={widths: [8, 16, 32]}",
                "augmentation.steps=[{name: RandomCrop, params: {height: 96, width: 96}},"
                " {name: D4, params: {p: 1.0}}]",
            ],
        )
        model_dir = Path(train(config).folds[0].model_dir)
    return TinyModel(data_root, model_dir, run_dir)


def oof_chip_ids(run_dir: str | os.PathLike) -> list[str]:
    """The chips a training run holds out-of-fold probabilities for (``oof/fold_*.npz``)."""
    return sorted(read_oof_folder(run_dir))


def chips_per_location(data_root: str | os.PathLike, n: int, split: str = "train") -> list[str]:
    """At most ``n`` chips of each location (the first by id): a small, balanced subset."""
    frame = list_chips(DatasetPaths(Path(data_root), split))
    return sorted(frame.groupby("location", sort=True).head(n)["chip_id"])


def corrupted_labels(data_root: str | os.PathLike) -> dict[str, str]:
    """``{chip_id: kind}`` of the labels sample-data corrupted on purpose (empty if none)."""
    path = Path(data_root) / INFO_NAME
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")).get("corrupted_labels", {}))


def model_masks(
    model_dir: str | os.PathLike,
    paths: DatasetPaths,
    chip_ids: Sequence[str] | None = None,
    device: str = "cpu",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(probabilities, masks)`` of a model folder on chips of ``paths`` (default: all).

    Through the prediction core's folder level, in memory: masks follow the folder's manifest
    (threshold, post-processing, chip rules, nodata), as ``oncloudn predict`` writes them.
    """
    model = load_model_folder(model_dir, device)
    ids = list(chip_ids) if chip_ids is not None else list(list_chips(paths)["chip_id"])
    probabilities: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}

    def keep(chip_id: str, probability: np.ndarray, mask: np.ndarray) -> None:
        probabilities[chip_id] = probability
        masks[chip_id] = mask

    predict_chips(model, str(paths.features_dir), None, chip_ids=ids, device=device, sink=keep)
    return probabilities, masks


def score_models(
    model_dirs: Mapping[str, str | os.PathLike],
    paths: DatasetPaths,
    chip_ids: Sequence[str] | None = None,
    n_boot: int = 1000,
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Score model folders on labelled chips: pooled Jaccard, 95 % interval, per location.

    Returns:
        ``(table, masks)``: one row per model and location (``all`` first), and each model's
        masks.
    """
    chips = list_chips(paths)
    if chip_ids is not None:
        chips = chips[chips["chip_id"].isin(set(chip_ids))]
    locations = dict(zip(chips["chip_id"], chips["location"], strict=True))
    labels = {c: read_chip(paths, c).label for c in chips["chip_id"]}
    rows, all_masks = [], {}
    for name, folder in model_dirs.items():
        _, masks = model_masks(folder, paths, list(labels))
        all_masks[name] = masks
        report = score_arrays(masks, labels, locations, n_bootstrap=n_boot)
        rows.append(
            {
                "model": name,
                "location": "all",
                "n_chips": report.n_chips,
                "jaccard": report.jaccard,
                "ci_low": report.ci_low,
                "ci_high": report.ci_high,
            }
        )
        for row in report.per_location.to_dict("records"):
            rows.append(
                {"model": name, **{k: row.get(k) for k in ("location", "n_chips", "jaccard")}}
            )
    return pd.DataFrame(rows), all_masks


def plot_chip_rows(
    paths: DatasetPaths,
    chip_ids: Sequence[str],
    masks: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    with_label: bool = True,
) -> Any:
    """One row per chip: RGB, nodata, label, then one panel per named mask set."""
    # lazy: matplotlib is optional (the `notebooks` extra)
    import matplotlib.pyplot as plt

    masks = masks or {}
    columns = 2 + int(with_label) + len(masks)
    fig, axes = plt.subplots(
        len(chip_ids), columns, figsize=(2.6 * columns, 2.6 * len(chip_ids)), squeeze=False
    )
    frame = list_chips(paths).set_index("chip_id")
    for row, chip_id in zip(axes, chip_ids, strict=True):
        chip = read_chip(paths, chip_id, bands=RGB_BANDS, with_label=with_label)
        panels = [
            (rgb_view(chip.bands, chip.nodata), f"{chip_id} {frame.loc[chip_id, 'location']}"),
            (chip.nodata, f"nodata {chip.nodata.mean():.0%}"),
        ]
        if with_label:
            panels.append((chip.label != 0, f"label {np.mean(chip.label != 0):.0%} cloud"))
        panels += [
            (m[chip_id] != 0, f"{name} {np.mean(m[chip_id] != 0):.0%}") for name, m in masks.items()
        ]
        for ax, (image, title) in zip(row, panels, strict=True):
            ax.imshow(image, cmap=None if image.ndim == 3 else "gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return fig

"""Figures of a sweep (matplotlib, installed with the ``notebooks`` extra).

- :func:`plot_curves`: pooled Jaccard against each parameter, the others held at the chosen
  setting, on tuning chips (solid) and report chips (dashed), one panel per parameter.
- :func:`plot_chip_panels`: per chip, RGB, label, and the masks before and after.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oncloudn.data.chips import read_chip
from oncloudn.errors import ConfigError
from oncloudn.runtime.atomic import atomic_path
from oncloudn.training.flag_plot import RGB_BANDS, rgb_view

from .run import SweepResult
from .settings import PARAMETERS, Setting


def _pyplot():
    try:
        # lazy: matplotlib is optional (the `notebooks` extra); the sweep runs without it
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "plots need matplotlib: pip install -e '.[notebooks]' (or pass --no-plot)"
        ) from None
    return plt


def plot_curves(
    curves: pd.DataFrame | SweepResult,
    source: str | None = None,
    split: str | None = None,
    path: str | os.PathLike | None = None,
) -> Any:
    """Jaccard against each parameter (one panel each); saved to ``path`` when given.

    Args:
        curves: ``SweepResult.curves()`` or the result itself.
        source: The source to draw (default: the first).
        split: The split to draw (default: every split, one colour each).
        path: PNG file to write (atomically).

    Returns:
        The matplotlib figure.
    """
    plt = _pyplot()
    frame = curves.curves() if isinstance(curves, SweepResult) else curves
    source = source or frame["source"].iloc[0]
    frame = frame[frame["source"] == source]
    if split is not None:
        frame = frame[frame["split"] == split]
    parameters = [p for p in PARAMETERS if (frame["parameter"] == p).sum() > 2]
    cols = 4
    rows = max(1, -(-len(parameters) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, parameter in zip(axes.ravel(), parameters, strict=False):
        part = frame[frame["parameter"] == parameter]
        for k, (split_name, group) in enumerate(part.groupby("split", sort=False)):
            for chips, style in (("tune", "-"), ("report", "--")):
                line = group[group["chips"] == chips]
                x = [str(v) for v in line["value"]] if parameter == "tta" else line["value"]
                ax.plot(
                    x,
                    line["jaccard"],
                    style,
                    marker="o",
                    ms=3,
                    color=colours[k % len(colours)],
                    label=f"{split_name} ({chips})",
                )
                chosen = line[line["chosen"]]
                xc = [str(v) for v in chosen["value"]] if parameter == "tta" else chosen["value"]
                ax.plot(xc, chosen["jaccard"], "*", ms=10, color=colours[k % len(colours)])
        ax.set_title(parameter)
        ax.set_ylabel("pooled Jaccard")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(parameters) :]:
        ax.axis("off")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8)
    fig.suptitle(f"{source}: Jaccard against each parameter (others at the chosen setting, *)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    if path is not None:
        with atomic_path(Path(path)) as temp:
            fig.savefig(temp, dpi=90, format="png")
    return fig


def plot_chip_panels(
    result: SweepResult,
    source: str,
    chip_ids: Sequence[str],
    before: Setting,
    after: Setting,
    path: str | os.PathLike | None = None,
) -> Any:
    """RGB, label, mask before and after, one row per chip."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(chip_ids), 4, figsize=(12, 3 * len(chip_ids)), squeeze=False)
    for row, chip_id in zip(axes, chip_ids, strict=True):
        chip = read_chip(result.paths, chip_id, bands=RGB_BANDS, with_label=False)
        panels = [
            (
                rgb_view(chip.bands, chip.nodata),
                f"{chip_id} ({result.store.chips[chip_id].location})",
            ),
            (result.store.chips[chip_id].label, "label"),
            (result.store.mask(source, chip_id, before), "before: " + before.describe()[:40]),
            (result.store.mask(source, chip_id, after), "after: " + after.describe()[:40]),
        ]
        for ax, (image, title) in zip(row, panels, strict=True):
            ax.imshow(
                image if image.ndim == 3 else np.asarray(image, dtype=np.uint8),
                cmap=None if image.ndim == 3 else "gray",
                vmin=0,
                vmax=1 if image.ndim == 2 else None,
            )
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    if path is not None:
        with atomic_path(Path(path)) as temp:
            fig.savefig(temp, dpi=80, format="png")
    return fig

"""What a sweep leaves behind: tables, JSON, the tuned model folder, and chips that change.

- :func:`write_results`: ``sweep.json`` (everything), ``sweep.md`` (the table with 95 %
  intervals), ``per_location.csv`` and ``curves.csv``.
- :func:`write_tuned_model`: a copy of a model folder whose manifest carries the chosen TTA,
  threshold, pixel post-processing and chip-level rules (so ``pack`` ships them), checked by
  loading it with the runtime's loader.
- :func:`changed_chips`: the chips whose masks change most between two settings, for image
  panels.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oncloudn.models.folder import copy_model_folder, load_model_folder, read_model_manifest
from oncloudn.runtime.atomic import atomic_path, atomic_write_json, atomic_write_text
from oncloudn.runtime.manifest import write_manifest

from .run import SweepResult
from .settings import Setting

logger = logging.getLogger(__name__)


def write_results(result: SweepResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``sweep.json``, ``sweep.md``, ``per_location.csv``, ``curves.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out / "sweep.json",
        "markdown": out / "sweep.md",
        "per_location": out / "per_location.csv",
        "curves": out / "curves.csv",
    }
    atomic_write_json(files["json"], result.to_dict())
    atomic_write_text(files["markdown"], result.markdown() + "\n")
    for key, frame in (("per_location", result.per_location()), ("curves", result.curves())):
        with atomic_path(files[key]) as temp:
            frame.to_csv(temp, index=False, float_format="%.6f", lineterminator="\n")
    return files


def write_tuned_model(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    setting: Setting,
    summary: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Copy a model folder to ``out_dir`` with ``setting`` in its manifest.

    Args:
        model_dir: The model folder the setting was tuned for.
        out_dir: New folder (must be absent or empty unless ``force``).
        setting: TTA views, threshold, ``postprocess`` and ``chip_rules`` to store.
        summary: Recorded under ``metrics["postprocessing_sweep"]`` (e.g. the held-out gain).
        force: Overwrite the model files of a non-empty ``out_dir``.

    Returns:
        ``out_dir``, loadable by ``oncloudn.runtime.loader.load_model``.

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``force`` is off.
        FileNotFoundError: ``model_dir`` is not a model folder.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(
            f"--write-manifest folder {out} is not empty; choose a new folder or pass --force"
        )
    manifest = read_model_manifest(model_dir)
    copy_model_folder(model_dir, out)
    manifest.tta = setting.views
    manifest.threshold = float(setting.threshold)
    manifest.postprocess = setting.postprocess
    manifest.chip_rules = setting.chip_rules
    manifest.metrics = {
        **manifest.metrics,
        "postprocessing_sweep": {
            "source_model": str(model_dir),
            "setting": asdict(setting),
            **(summary or {}),
        },
    }
    write_manifest(str(out), manifest)
    load_model_folder(out)  # the runtime's loader must accept it
    logger.info("wrote %s with %s", out, setting.describe())
    return out


def changed_chips(
    result: SweepResult, source: str, before: Setting, after: Setting, chip_ids=None, top: int = 4
) -> pd.DataFrame:
    """Chips whose masks differ most between two settings (pixels that flip), most first.

    Returns:
        Columns ``chip_id``, ``location``, ``changed_pixels``, ``J_before``, ``J_after``.
    """
    store = result.store
    rows = []
    for chip_id in chip_ids if chip_ids is not None else store.chip_ids:
        a = store.mask(source, chip_id, before).astype(bool)
        b = store.mask(source, chip_id, after).astype(bool)
        counts = store.counts(source, [chip_id], [before, after])[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            ja, jb = counts[:, 0] / counts[:, 1]
        rows.append(
            {
                "chip_id": chip_id,
                "location": store.chips[chip_id].location,
                "changed_pixels": int((a ^ b).sum()),
                "J_before": float(ja),
                "J_after": float(jb),
            }
        )
    frame = pd.DataFrame(rows).sort_values(["changed_pixels", "chip_id"], ascending=[False, True])
    return frame.head(top).reset_index(drop=True)

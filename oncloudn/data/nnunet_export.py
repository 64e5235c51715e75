"""Export a dataset root as an nnU-Net v2 raw dataset, with our location-grouped folds.

``export_nnunet_dataset(root, out, dataset_id)`` writes ``out/DatasetNNN_Name/``::

    imagesTr/<chip_id>_0000.tif .. _0003.tif   # B02, B03, B04, B08 (linked, not re-encoded)
    labelsTr/<chip_id>.tif                     # 0 clear, 1 cloud (255 -> the ignore label)
    dataset.json                               # channel_names, labels, NaturalImage2DIO
    splits_final.json                          # our folds: [{"train": [...], "val": [...]}]
    oncloudn_folds.csv                         # the same folds as chip_id,location,fold

nnU-Net reads its splits from ``nnUNet_preprocessed/DatasetNNN_Name/splits_final.json``.
Planning (``nnUNetv2_plan_and_preprocess``, nnunetv2 2.8.1) copies the raw folder's
``splits_final.json`` there when that file is absent, and stops with an AssertionError when
a different one is already there (e.g. nnU-Net's random 5-fold split of an earlier run).
``preprocessed=DIR`` writes our splits there directly, for a dataset already planned.

Band files keep their bytes (hard links by default): nnU-Net's ``NaturalImage2DIO`` reads a
single-band uint16 GeoTIFF as one channel. Labels are linked as well unless they hold 255
(nodata), which is rewritten to nnU-Net's ignore label (the highest label value, named
``ignore``: pixels nnU-Net neither trains nor validates on).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from oncloudn.data.chips import DatasetPaths, list_chips
from oncloudn.data.folds import assign_folds, folds_for_chips, load_folds, save_folds
from oncloudn.errors import DataError
from oncloudn.runtime.atomic import atomic_write_json
from oncloudn.runtime.chipio import BANDS, read_label

logger = logging.getLogger(__name__)

LINK_MODES = ("hard", "symlink", "copy")
SPLITS_NAME = "splits_final.json"
FOLDS_NAME = "oncloudn_folds.csv"
LABEL_NODATA = 255
LABELS = {"background": 0, "cloud": 1}
IGNORE_NAME = "ignore"
DATASET_FILES = {"imagesTr", "labelsTr", "dataset.json", SPLITS_NAME, FOLDS_NAME}


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_nnunet_dataset` wrote.

    Attributes:
        folder: The dataset folder ``OUT/DatasetNNN_Name``.
        chips: Number of training cases.
        folds: Number of folds in ``splits_final.json``.
        ignore_label: The ignore label's value, ``None`` when no label holds 255.
        splits_copies: Other ``splits_final.json`` files written (``preprocessed=``).
    """

    folder: Path
    chips: int
    folds: int
    ignore_label: int | None
    splits_copies: tuple[Path, ...] = ()


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name ``DatasetNNN_Name`` (id 1..999; letters, digits, ``-``, ``_``).

    Raises:
        DataError: An id outside 1..999 or a name nnU-Net cannot parse.
    """
    if not 1 <= int(dataset_id) <= 999:
        raise DataError(f"--dataset-id must be in 1..999 (nnU-Net's DatasetNNN), got {dataset_id}")
    if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
        raise DataError(f"--name {name!r}: use letters, digits, '-' or '_' (e.g. OnCloudN)")
    return f"Dataset{int(dataset_id):03d}_{name}"


def nnunet_splits(folds: pd.DataFrame) -> list[dict[str, list[str]]]:
    """Our folds as nnU-Net's ``splits_final.json``: split ``k`` validates on fold ``k``.

    Args:
        folds: A folds frame ``chip_id, location, fold`` (folds ``0..K-1``, none empty).

    Raises:
        DataError: A fold number in ``0..max`` holds no chip.
    """
    values = sorted(set(int(fold) for fold in folds["fold"]))
    missing = sorted(set(range(values[-1] + 1)) - set(values)) if values else [0]
    if missing:
        raise DataError(f"folds {missing} hold no chip; number folds 0..K-1 without gaps")
    chips = folds.sort_values("chip_id")
    return [
        {
            "train": chips.loc[chips["fold"] != fold, "chip_id"].tolist(),
            "val": chips.loc[chips["fold"] == fold, "chip_id"].tolist(),
        }
        for fold in values
    ]


def check_splits(path: str | Path, splits: list[dict[str, list[str]]], force: bool) -> None:
    """Refuse to replace a ``splits_final.json`` holding other splits unless ``force``.

    Raises:
        DataError: ``path`` holds other splits and ``force`` is false.
    """
    path = Path(path)
    if not path.is_file() or force:
        return
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        current = None
    if current != splits:
        raise DataError(
            f"{path} already holds other splits (nnU-Net would train on those); pass "
            "--force to replace them with ours"
        )


def write_splits(path: str | Path, splits: list[dict[str, list[str]]], force: bool = False) -> Path:
    """Write ``splits_final.json`` atomically; a different existing file needs ``force``.

    Raises:
        DataError: ``path`` holds other splits and ``force`` is false.
    """
    path = Path(path)
    check_splits(path, splits, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, splits)
    return path


def _resolve_folds(
    chips: pd.DataFrame, folds_file: str | Path | None, n_folds: int, seed: int
) -> pd.DataFrame:
    if folds_file is None:
        return assign_folds(chips, n_folds=n_folds, seed=seed)
    folds = load_folds(folds_file)
    fix = "make the folds from this dataset root"
    return folds_for_chips(folds, chips, folds_file, "the dataset", fix)


def _place(source: Path, target: Path, link: str) -> None:
    """Put ``source``'s bytes at ``target``: hard link (copy across devices), symlink, copy."""
    if link == "hard":
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    elif link == "symlink":
        os.symlink(source.resolve(), target)
        return
    shutil.copyfile(source, target)


def _export_label(source: Path, target: Path, chip_id: str, ignore: int, link: str) -> bool:
    """Link a {0, 1} label or write it with 255 -> ``ignore``; True when it held 255."""
    label = read_label(str(source), chip_id)
    values = set(np.unique(label).tolist())
    unknown = sorted(values - {0, 1, LABEL_NODATA})
    if unknown:
        raise DataError(f"label {source} holds values {unknown}; expected 0, 1 and 255 (nodata)")
    if LABEL_NODATA not in values:
        _place(source, target, link)
        return False
    tifffile.imwrite(target, np.where(label == LABEL_NODATA, ignore, label).astype(np.uint8))
    return True


def _dataset_json(name: str, count: int, bands: tuple[str, ...], ignore: int | None) -> dict:
    labels = dict(LABELS)
    if ignore is not None:
        labels[IGNORE_NAME] = ignore
    return {
        "name": name,
        "description": "On Cloud N chips exported by oncloudn (clear = background, cloud = 1)",
        "channel_names": {str(index): band for index, band in enumerate(bands)},
        "labels": labels,
        "numTraining": count,
        "file_ending": ".tif",
        "overwrite_image_reader_writer": "NaturalImage2DIO",
    }


def _check_out(out: Path, folder_name: str, force: bool) -> None:
    target = out / folder_name
    prefix = folder_name.split("_", 1)[0] + "_"
    others = sorted(p.name for p in out.glob(prefix + "*") if p.name != folder_name)
    if others:
        raise DataError(
            f"{out} already holds {others[0]} with the same dataset id; nnU-Net needs one "
            "folder per id: choose another --dataset-id or remove it"
        )
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    foreign = sorted(p.name for p in target.iterdir() if p.name not in DATASET_FILES)
    if not force or foreign:
        raise DataError(
            f"{target} is not empty; pass --force to replace the export there"
            + (f" (it holds files no export writes: {foreign[:5]})" if foreign else "")
        )


def _write_cases(tmp: Path, paths: DatasetPaths, chip_ids: list[str], link: str) -> bool:
    """imagesTr and labelsTr; returns whether any label held 255."""
    (tmp / "imagesTr").mkdir()
    (tmp / "labelsTr").mkdir()
    ignore = len(LABELS)
    any_nodata = False
    for chip_id in chip_ids:
        for index, band in enumerate(BANDS):
            source = paths.chip_dir(chip_id) / f"{band}.tif"
            if not source.is_file():
                raise DataError(f"chip {chip_id}: band file {source} is missing")
            _place(source, tmp / "imagesTr" / f"{chip_id}_{index:04d}.tif", link)
        label = tmp / "labelsTr" / f"{chip_id}.tif"
        any_nodata |= _export_label(paths.label_path(chip_id), label, chip_id, ignore, link)
    return any_nodata


def export_nnunet_dataset(
    root: str | Path,
    out: str | Path,
    dataset_id: int,
    name: str = "OnCloudN",
    folds_file: str | Path | None = None,
    n_folds: int = 5,
    seed: int = 0,
    preprocessed: str | Path | None = None,
    link: str = "hard",
    force: bool = False,
) -> ExportSummary:
    """Write the train split of ``root`` as the nnU-Net v2 raw dataset ``DatasetNNN_Name``.

    The dataset is built in a temporary folder inside ``out`` and renamed into place, so an
    interrupted export leaves nothing half-written.

    Args:
        root: A dataset root (``train_features``, ``train_labels``, ``train_metadata.csv``).
        out: The ``nnUNet_raw`` folder to write into.
        dataset_id: nnU-Net's dataset id (1..999).
        name: The dataset name after ``DatasetNNN_``.
        folds_file: Our folds CSV (``chip_id,location,fold``); default: ``n_folds``
            location-grouped folds made from the metadata.
        n_folds: Number of folds when no folds file is given.
        seed: Tie-break seed of the folds when no folds file is given.
        preprocessed: The ``nnUNet_preprocessed`` folder: also write our splits there.
        link: ``hard`` (hard links, copies across devices), ``symlink`` or ``copy``.
        force: Replace an existing export of the same name (and other splits there).

    Returns:
        An :class:`ExportSummary`.

    Raises:
        DataError: Bad arguments, labels with values other than 0, 1, 255, a folds file not
            covering the chips, or an existing non-empty export without ``force``.
    """
    if link not in LINK_MODES:
        raise DataError(f"unknown link mode {link!r}; choose one of: {', '.join(LINK_MODES)}")
    folder_name = dataset_folder_name(dataset_id, name)
    out = Path(out)
    paths = DatasetPaths(Path(root), "train")
    chips = list_chips(paths)
    if chips.empty:
        raise DataError(f"{paths.features_dir} holds no chips to export")
    folds = _resolve_folds(chips, folds_file, n_folds, seed)
    splits = nnunet_splits(folds)
    out.mkdir(parents=True, exist_ok=True)
    _check_out(out, folder_name, force)
    pre_splits = None if preprocessed is None else Path(preprocessed) / folder_name / SPLITS_NAME
    if pre_splits is not None:
        check_splits(pre_splits, splits, force)
    chip_ids = sorted(chips["chip_id"])
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder_name}.tmp-", dir=out))
    try:
        has_nodata = _write_cases(tmp, paths, chip_ids, link)
        ignore = len(LABELS) if has_nodata else None
        atomic_write_json(tmp / "dataset.json", _dataset_json(name, len(chip_ids), BANDS, ignore))
        write_splits(tmp / SPLITS_NAME, splits)
        save_folds(folds, tmp / FOLDS_NAME)
        os.chmod(tmp, 0o755)
        if (out / folder_name).exists():
            shutil.rmtree(out / folder_name)
        os.replace(tmp, out / folder_name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    copies = () if pre_splits is None else (write_splits(pre_splits, splits, force=True),)
    logger.info(
        "exported %d chips, %d folds to %s%s",
        len(chip_ids),
        len(splits),
        out / folder_name,
        "" if ignore is None else f" (label 255 -> ignore label {ignore})",
    )
    return ExportSummary(out / folder_name, len(chip_ids), len(splits), ignore, copies)

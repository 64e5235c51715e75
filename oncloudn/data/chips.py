"""The On Cloud N dataset root: paths, metadata, chip listing and reading.

One layout everywhere (sample-data, download, check-data, train, run-local)::

    ROOT/{split}_features/<chip_id>/B02.tif B03.tif B04.tif B08.tif
    ROOT/{split}_labels/<chip_id>.tif
    ROOT/{split}_metadata.csv        # chip_id, location, datetime[, cloudpath]

A runtime data mount (``/codeexecution/data``) is the same layout with only ``test_features``
and ``test_metadata.csv``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from oncloudn.errors import ChipFormatError, DataError
from oncloudn.runtime.chipio import BANDS, list_chip_ids, nodata_mask, read_bands, read_label

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
REQUIRED_METADATA_COLUMNS = ("chip_id",)
UNKNOWN_LOCATION = "unknown"


@dataclass(frozen=True)
class DatasetPaths:
    """Paths of one split of a dataset root.

    Attributes:
        root: The dataset root.
        split: ``train`` or ``test``.
    """

    root: Path
    split: str = "train"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.split not in SPLITS:
            raise DataError(f"unknown split {self.split!r}; choose one of: {', '.join(SPLITS)}")

    @property
    def features_dir(self) -> Path:
        return self.root / f"{self.split}_features"

    @property
    def labels_dir(self) -> Path:
        return self.root / f"{self.split}_labels"

    @property
    def metadata_path(self) -> Path:
        return self.root / f"{self.split}_metadata.csv"

    def chip_dir(self, chip_id: str) -> Path:
        return self.features_dir / chip_id

    def label_path(self, chip_id: str) -> Path:
        return self.labels_dir / f"{chip_id}.tif"


def _holds_bands(folder: Path) -> bool:
    return any((folder / f"{band}.tif").is_file() for band in BANDS)


def _looks_like_features(folder: Path) -> bool:
    subfolders = (p for p in sorted(folder.iterdir())[:50] if p.is_dir())
    return folder.name.endswith("_features") or any(_holds_bands(p) for p in subfolders)


def root_problem(paths: DatasetPaths) -> str | None:
    """What is wrong with a split's dataset root, in one line (``None`` when usable).

    Says what was found (nothing, a file, a features folder, a chip folder, other folders)
    and what is expected.
    """
    root, features = paths.root, paths.features_dir
    expected = f"expected a dataset root holding {features.name}/<chip_id>/B02.tif ..."
    if not root.exists():
        return f"dataset root {root} does not exist; {expected}"
    if not root.is_dir():
        return f"dataset root {root} is a file, not a folder; {expected}"
    if features.is_dir():
        return None
    if features.exists():
        return f"{features} is a file, not a folder; {expected}"
    if _holds_bands(root):
        return (
            f"{root} looks like a chip folder (it holds band files); {expected} "
            f"(e.g. {root.parent.parent})"
        )
    if _looks_like_features(root):
        return (
            f"{root} looks like a features folder (its sub-folders hold band files), not a "
            f"dataset root; pass the folder above it ({root.parent}) whose {features.name} "
            "holds the chips"
        )
    found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))[:5]
    return (
        f"{root} has no {features.name} folder (found: {', '.join(found) or 'nothing'}); {expected}"
    )


def check_root(paths: DatasetPaths) -> None:
    """Raise :class:`DataError` with :func:`root_problem`'s line for an unusable root."""
    problem = root_problem(paths)
    if problem:
        raise DataError(problem)


def read_str_csv(path: Path, name: str) -> pd.DataFrame:
    """Read a CSV with every column as ``str`` and no NA guessing (ids like ``0000`` stay).

    Raises:
        DataError: ``"<name>: cannot be read as CSV (...)"``.
    """
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{name}: cannot be read as CSV ({error})") from None


def duplicate_chip_ids(frame: pd.DataFrame) -> list[str]:
    """Up to five ``chip_id`` values listed more than once, sorted (empty when none)."""
    return sorted(frame.loc[frame["chip_id"].duplicated(), "chip_id"].unique())[:5]


def read_metadata(
    path: str | Path, required: tuple[str, ...] = REQUIRED_METADATA_COLUMNS
) -> pd.DataFrame:
    """Read a ``*_metadata.csv`` with every column as ``str`` (chip ids like ``0000`` stay).

    Raises:
        DataError: The file cannot be parsed or lacks a required column.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"metadata CSV {path} does not exist")
    frame = read_str_csv(path, str(path))
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; found {list(frame.columns)}. "
            "Expected at least chip_id (and location, datetime for train/test metadata)"
        )
    duplicates = duplicate_chip_ids(frame)
    if duplicates:
        raise DataError(f"{path}: duplicate chip_id values, e.g. {duplicates}")
    return frame


def list_chips(paths: DatasetPaths) -> pd.DataFrame:
    """Chips of a split: the non-hidden folders of its features folder (what the runtime
    checks against), joined with its metadata CSV when present.

    Returns:
        A frame with at least ``chip_id`` and ``location`` (``unknown`` where the CSV has no
        row or no location column), one row per chip folder, sorted by ``chip_id``.
    """
    chip_ids = list_chip_ids(str(paths.features_dir))
    frame = pd.DataFrame({"chip_id": chip_ids}, dtype=str)
    if paths.metadata_path.exists():
        metadata = read_metadata(paths.metadata_path)
        absent = sorted(set(metadata["chip_id"]) - set(chip_ids))
        if absent:
            logger.warning(
                "%s lists %d chip(s) with no folder in %s (ignored), e.g. %s",
                paths.metadata_path,
                len(absent),
                paths.features_dir,
                absent[:3],
            )
        frame = frame.merge(metadata, on="chip_id", how="left")
    if "location" not in frame.columns:
        frame["location"] = UNKNOWN_LOCATION
    frame["location"] = frame["location"].fillna(UNKNOWN_LOCATION).replace("", UNKNOWN_LOCATION)
    return frame.fillna("").reset_index(drop=True)


@dataclass
class Chip:
    """One chip read from disk.

    Attributes:
        chip_id: The chip's folder name.
        bands: Raw uint16 DN ``[C, H, W]`` in the order of ``band_names``.
        band_names: Names of the channels of ``bands``.
        nodata: ``True`` where every band is 0.
        label: uint8 ``[H, W]`` as stored (``None`` when not read).
        crs: Coordinate reference system of the bands (``None`` when not georeferenced).
        transform: Affine geotransform of the bands.
        metadata: The chip's metadata row (empty when there is no CSV).
    """

    chip_id: str
    bands: np.ndarray
    band_names: tuple[str, ...]
    nodata: np.ndarray
    label: np.ndarray | None = None
    crs: object = None
    transform: object = None
    metadata: dict[str, str] = field(default_factory=dict)


def read_chip(
    paths: DatasetPaths,
    chip_id: str,
    bands: tuple[str, ...] | list[str] = BANDS,
    with_label: bool = True,
    metadata: dict[str, str] | None = None,
) -> Chip:
    """Read one chip's bands (raw uint16, never scaled or clipped), nodata mask, CRS,
    transform and, when asked, its label.

    Raises:
        ChipError: (a subclass) for a missing chip, band or label, a corrupt TIFF, or a
            wrong shape/dtype; the message names the chip and path.
    """
    array, profile = read_bands(str(paths.chip_dir(chip_id)), tuple(bands), with_profile=True)
    label = None
    if with_label:
        label = read_label(str(paths.label_path(chip_id)), chip_id)
        if label.shape != array.shape[1:]:
            raise ChipFormatError(
                chip_id,
                str(paths.label_path(chip_id)),
                f"label shape {label.shape} differs from band shape {array.shape[1:]}",
            )
    return Chip(
        chip_id=chip_id,
        bands=array,
        band_names=tuple(bands),
        nodata=nodata_mask(array),
        label=label,
        crs=profile.get("crs"),
        transform=profile.get("transform"),
        metadata=dict(metadata or {}),
    )

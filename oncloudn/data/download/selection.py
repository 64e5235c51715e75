"""Which chips and files a download fetches: driven by the split's metadata CSV, never by
listing a bucket; and whether the disk can hold them."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from oncloudn.data.chips import read_str_csv
from oncloudn.errors import DataError
from oncloudn.runtime.bands import BANDS

BAND_FILE_BYTES = 512 * 512 * 2 + 8192
"""Estimated size of one band file: 512 x 512 uint16, uncompressed, plus GeoTIFF tags."""
LABEL_FILE_BYTES = 512 * 512 + 8192
"""Estimated size of one label file: 512 x 512 uint8, plus tags."""
DISK_MARGIN = 1.05
"""Free space wanted beyond the estimate (staging, the manifest)."""
MAX_LISTED = 5


@dataclass(frozen=True)
class ChipFiles:
    """The files of one chip, as paths relative to the dataset root.

    Attributes:
        chip_id: The chip.
        features: ``{split}_features/<chip_id>/B0X.tif`` for each band.
        label: ``{split}_labels/<chip_id>.tif`` when labels are fetched, else ``None``.
    """

    chip_id: str
    features: tuple[str, ...]
    label: str | None = None

    @property
    def files(self) -> tuple[str, ...]:
        """Every file of the chip, label first (it is moved into place before the bands)."""
        return ((self.label,) if self.label else ()) + self.features


def metadata_name(split: str) -> str:
    """``train_metadata.csv`` or ``test_metadata.csv``."""
    return f"{split}_metadata.csv"


def chip_files(split: str, chip_id: str, labels: bool) -> ChipFiles:
    """The relative paths of a chip's band files (and label)."""
    features = tuple(f"{split}_features/{chip_id}/{band}.tif" for band in BANDS)
    return ChipFiles(chip_id, features, f"{split}_labels/{chip_id}.tif" if labels else None)


def read_chip_list(path: Path) -> list[str]:
    """Chip ids from a file: a CSV with a ``chip_id`` column, or one id per line.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: It names no chip.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"chip list {path} does not exist")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if lines and "chip_id" in lines[0].split(","):
        ids = read_str_csv(path, str(path))["chip_id"].str.strip().tolist()
    else:
        ids = lines
    if not ids:
        raise DataError(f"chip list {path} names no chip; write one chip id per line")
    return list(dict.fromkeys(ids))


def select_chip_ids(
    metadata: pd.DataFrame, chips: list[str] | None = None, max_chips: int | None = None
) -> list[str]:
    """The chips to fetch, in the metadata CSV's order.

    Args:
        metadata: The split's metadata (``chip_id`` column, read as ``str``).
        chips: Only these chips (every one must be in the CSV).
        max_chips: At most this many, the CSV's first.

    Raises:
        DataError: ``chips`` names ids the CSV lacks, or ``max_chips`` is below 1.
    """
    listed = metadata["chip_id"].tolist()
    if chips is not None:
        unknown = sorted(set(chips) - set(listed))
        if unknown:
            raise DataError(
                f"{len(unknown)} chip id(s) are not in the split's metadata CSV, e.g. "
                f"{unknown[:MAX_LISTED]}; check the split (--split) and the chip list"
            )
        wanted = set(chips)
        listed = [chip_id for chip_id in listed if chip_id in wanted]
    if max_chips is not None:
        if max_chips < 1:
            raise DataError(f"--max-chips {max_chips}: give a positive number")
        listed = listed[:max_chips]
    return listed


def estimate_bytes(files: list[str]) -> int:
    """Estimated bytes of ``files`` (bands and labels at their 512 x 512 sizes)."""
    return sum(LABEL_FILE_BYTES if "_labels/" in name else BAND_FILE_BYTES for name in files)


def check_free_disk(root: Path, needed_bytes: int) -> int:
    """The free bytes at ``root``'s filesystem, when enough for ``needed_bytes``.

    Raises:
        DataError: Less free space than ``needed_bytes`` (plus a 5 % margin).
    """
    probe = Path(root)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    wanted = int(needed_bytes * DISK_MARGIN)
    if free < wanted:
        raise DataError(
            f"{root}: about {wanted / 1e9:.2f} GB needed but {free / 1e9:.2f} GB free; free "
            "some space, choose another ROOT, or fetch fewer chips (--max-chips, --chips)"
        )
    return free

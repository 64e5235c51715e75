"""``bench read``: chips/s of reading a features folder's chips (the runtime's reader)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from oncloudn.errors import ConfigError
from oncloudn.inference.bench_timing import BenchRow, time_repeats
from oncloudn.runtime.bands import BANDS
from oncloudn.runtime.chip_reading import load_chip
from oncloudn.runtime.chipio import list_chip_ids


def bench_chip_ids(features_dir: str | os.PathLike, limit: int | None) -> list[str]:
    """The first ``limit`` chips of a features folder.

    Raises:
        ConfigError: The folder is missing or holds no chips.
    """
    features_dir = os.fspath(features_dir)
    if not os.path.isdir(features_dir):
        raise ConfigError(
            f"features folder {features_dir} does not exist; pass <root>/test_features"
        )
    chip_ids = list_chip_ids(features_dir)[:limit]
    if not chip_ids:
        raise ConfigError(f"features folder {features_dir} holds no chip folders")
    return chip_ids


def bench_read(
    features_dir: str | os.PathLike,
    limit: int | None = 32,
    repeats: int = 3,
    bands: Sequence[str] = BANDS,
) -> BenchRow:
    """Median chips/s of reading every band of each chip (files warm in the page cache)."""
    chip_ids = bench_chip_ids(features_dir, limit)
    folder = os.fspath(features_dir)

    def run() -> None:
        for chip_id in chip_ids:
            loaded = load_chip(folder, chip_id, bands, None)
            if isinstance(loaded, Exception):
                raise ConfigError(f"chip {chip_id} in {folder} cannot be read: {loaded}")

    return time_repeats(run, len(chip_ids), repeats, "read (rasterio, 4 bands)")

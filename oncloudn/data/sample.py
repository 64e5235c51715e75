"""Generate a realistic synthetic dataset root in the On Cloud N layout (``sample-data``).

Each chip is a procedural Sentinel-2 L2A scene from ``scene_synthesis.py`` (reflectance x
10000, uint16), written as one GeoTIFF per band with a UTM CRS, 10 m pixels and nodata 0.

Bright desert and snow make a brightness threshold fail, so the data is a real learning
problem. Optionally a fraction of training chips gets a corrupted label (inverted, all cloud,
or snow marked as cloud), recorded in ``sample_info.json`` and in the label file's
``ONCLOUDN_LABEL_NOISE`` tag.

Everything derives from the seed: the same seed gives identical arrays, tags and CSVs.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine
from tqdm import tqdm

from oncloudn.data.scene_synthesis import (
    BIOMES,
    LABEL_NOISE_KINDS,
    corrupt_label,
    synthesize_chip,
)
from oncloudn.errors import DataError
from oncloudn.runtime.chipio import BANDS

logger = logging.getLogger(__name__)

INFO_NAME = "sample_info.json"
GENERATOR_VERSION = 1
PIXEL_SIZE = 10.0
# Named places (name, UTM EPSG, biome, UTM origin). Beyond the list: loc_NN with a seeded biome.
PLACES = (
    ("Chifunfu", 32736, "savanna", (420000.0, 9700000.0)),
    ("Tamanrasset", 32631, "desert", (700000.0, 2530000.0)),
    ("Tromso", 32634, "snow", (420000.0, 7730000.0)),
    ("Addis Ababa", 32637, "farmland", (470000.0, 1000000.0)),
    ("Manaus", 32720, "tropical", (830000.0, 9660000.0)),
    ("Kathmandu", 32645, "mountain", (330000.0, 3070000.0)),
    ("Phoenix", 32612, "desert", (400000.0, 3700000.0)),
    ("Ushuaia", 32719, "snow", (550000.0, 4030000.0)),
)


@dataclass(frozen=True)
class Location:
    """A place chips come from.

    Attributes:
        name: Location name as written in the metadata CSV.
        epsg: UTM EPSG code of its chips.
        biome: Key of ``BIOMES``.
        origin: Upper-left UTM coordinate of its first chip.
        datetimes: Acquisition times (ISO 8601, UTC) its chips are drawn from.
    """

    name: str
    epsg: int
    biome: str
    origin: tuple[float, float]
    datetimes: tuple[str, ...]


def make_chip_ids(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` unique four-lowercase-letter chip ids."""
    if count > 26**4:
        raise DataError(f"cannot make {count} unique four-letter chip ids (at most {26**4})")
    codes = rng.choice(26**4, size=count, replace=False)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(letters[(int(code) // 26**p) % 26] for p in (3, 2, 1, 0)) for code in codes]


def make_locations(seed: int, count: int) -> list[Location]:
    """The first ``count`` locations: named places, then ``loc_NN`` with seeded biomes."""
    locations = []
    for index in range(count):
        rng = np.random.default_rng([seed, 7, index])
        if index < len(PLACES):
            name, epsg, biome, origin = PLACES[index]
        else:
            name = f"loc_{index:02d}"
            zone = int(rng.integers(1, 61))
            epsg = (32600 if rng.random() < 0.7 else 32700) + zone
            biome = str(rng.choice(sorted(BIOMES)))
            origin = (float(rng.integers(3, 8)) * 1e5, float(rng.integers(5, 90)) * 1e5)
        datetimes = []
        for _ in range(int(rng.integers(2, 5))):
            day = np.datetime64("2018-01-01") + int(rng.integers(0, 3 * 365))
            seconds = int(rng.integers(7 * 3600, 11 * 3600))
            clock = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
            datetimes.append(f"{day}T{clock}Z")
        locations.append(Location(name, epsg, biome, origin, tuple(sorted(datetimes))))
    return locations


def _assign_locations(rng: np.random.Generator, count: int, n_locations: int) -> np.ndarray:
    """Location index per chip: every location used once (when possible), the rest uneven."""
    first = rng.permutation(n_locations)[: min(count, n_locations)]
    weights = rng.dirichlet(np.full(n_locations, 2.0))
    rest = rng.choice(n_locations, size=count - len(first), p=weights)
    return rng.permutation(np.concatenate([first, rest]).astype(int))


def _write_band(path: Path, array: np.ndarray, epsg: int, transform, tags: dict) -> None:
    profile = {
        "driver": "GTiff",
        "height": array.shape[0],
        "width": array.shape[1],
        "count": 1,
        "dtype": str(array.dtype),
        "crs": f"EPSG:{epsg}",
        "transform": transform,
        "compress": "deflate",
        "zlevel": 1,
        "predictor": 2,
    }
    if array.dtype == np.uint16:
        profile["nodata"] = 0
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)
        if tags:
            dst.update_tags(**tags)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _check_target(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder; choose another OUT")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise DataError(
            f"{out} is not empty; choose an empty or new folder, or pass --force "
            "(force=True) to replace the dataset there"
        )
    allowed = {INFO_NAME} | {
        f"{split}_{part}" for split in ("train", "test") for part in ("features", "labels")
    }
    allowed |= {"train_metadata.csv", "test_metadata.csv"}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in allowed)
    if foreign:
        raise DataError(
            f"refusing to replace {out}: it holds files that are not a dataset root "
            f"({foreign[:5]}); remove them or choose another OUT"
        )


def _generate_split(
    tmp: Path,
    split: str,
    chip_ids: list[str],
    location_index: np.ndarray,
    locations: list[Location],
    seed: int,
    size: int,
    noisy: dict[int, str],
) -> dict[str, str]:
    """Write one split's chips, labels and metadata; returns ``{chip_id: noise kind}``."""
    features = tmp / f"{split}_features"
    labels = tmp / f"{split}_labels"
    features.mkdir(parents=True)
    labels.mkdir(parents=True)
    split_key = 0 if split == "train" else 1
    per_location: dict[int, int] = {}
    rows, corrupted = [], {}
    for index in tqdm(range(len(chip_ids)), desc=f"sample {split}", unit="chip", leave=False):
        chip_id, location = chip_ids[index], locations[int(location_index[index])]
        rng = np.random.default_rng([seed, split_key, index])
        chip = synthesize_chip(rng, size, location.biome)
        if index in noisy:
            corrupted[chip_id] = corrupt_label(chip, noisy[index])
        slot = per_location.get(int(location_index[index]), 0)
        per_location[int(location_index[index])] = slot + 1
        x0 = location.origin[0] + (slot % 8) * size * PIXEL_SIZE
        y0 = location.origin[1] - (slot // 8) * size * PIXEL_SIZE
        transform = Affine(PIXEL_SIZE, 0.0, x0, 0.0, -PIXEL_SIZE, y0)
        (features / chip_id).mkdir()
        for band, array in zip(BANDS, chip.bands, strict=True):
            _write_band(features / chip_id / f"{band}.tif", array, location.epsg, transform, {})
        tags = {"ONCLOUDN_LABEL_NOISE": chip.label_noise} if chip.label_noise else {}
        _write_band(labels / f"{chip_id}.tif", chip.label, location.epsg, transform, tags)
        datetime = location.datetimes[int(rng.integers(len(location.datetimes)))]
        row = [chip_id, location.name, datetime]
        if split == "train":
            row.append(f"az://./{split}_features/{chip_id}")
        rows.append(row)
    header = ["chip_id", "location", "datetime"] + (["cloudpath"] if split == "train" else [])
    _write_csv(tmp / f"{split}_metadata.csv", header, sorted(rows))
    return corrupted


def generate_sample_dataset(
    out: Path,
    chips: int = 24,
    test_chips: int = 8,
    seed: int = 0,
    size: int = 512,
    n_locations: int = 6,
    label_noise: float = 0.0,
    force: bool = False,
) -> Path:
    """Write a synthetic dataset root (train and test splits) in the On Cloud N layout.

    The dataset is written into a temporary folder beside ``out`` and renamed into place at
    the end, so an interrupted run leaves no half-written dataset.

    Args:
        out: The dataset root to create.
        chips: Number of training chips.
        test_chips: Number of test chips (same locations; test metadata has no ``cloudpath``).
        seed: Everything derives from it; the same seed gives identical files' contents.
        size: Chip height and width in pixels (On Cloud N chips are 512).
        n_locations: Number of locations (named places first, then ``loc_NN``).
        label_noise: Fraction of training chips whose label gets corrupted.
        force: Replace an existing non-empty dataset root at ``out``.

    Returns:
        ``out``.

    Raises:
        DataError: Invalid arguments, or ``out`` is not empty and ``force`` is false.
    """
    out = Path(out)
    if chips < 1 or test_chips < 0 or n_locations < 1:
        raise DataError(
            f"need chips >= 1, test_chips >= 0 and n_locations >= 1 "
            f"(got {chips}, {test_chips}, {n_locations})"
        )
    if size < 16:
        raise DataError(f"size must be at least 16 pixels (got {size}); On Cloud N uses 512")
    if not 0.0 <= label_noise <= 1.0:
        raise DataError(f"label_noise must be a fraction in [0, 1] (got {label_noise})")
    _check_target(out, force)

    start = time.perf_counter()
    rng = np.random.default_rng([seed, 99])
    chip_ids = make_chip_ids(rng, chips + test_chips)
    locations = make_locations(seed, n_locations)
    train_locations = _assign_locations(rng, chips, n_locations)
    test_locations = _assign_locations(rng, test_chips, n_locations)
    n_noisy = int(round(label_noise * chips))
    noisy_indices = sorted(int(i) for i in rng.choice(chips, size=n_noisy, replace=False))
    noisy = {i: LABEL_NOISE_KINDS[k % 3] for k, i in enumerate(noisy_indices)}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        corrupted = _generate_split(
            tmp, "train", chip_ids[:chips], train_locations, locations, seed, size, noisy
        )
        _generate_split(tmp, "test", chip_ids[chips:], test_locations, locations, seed, size, {})
        info = {
            "generator": "oncloudn.data.sample",
            "version": GENERATOR_VERSION,
            "seed": seed,
            "size": size,
            "chips": chips,
            "test_chips": test_chips,
            "label_noise": label_noise,
            "locations": [
                {"name": loc.name, "epsg": loc.epsg, "biome": loc.biome} for loc in locations
            ],
            "corrupted_labels": dict(sorted(corrupted.items())),
        }
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - start
    logger.info(
        "wrote %d train + %d test chips (%dx%d, %d locations, %d corrupted labels) to %s in %.1f s",
        chips,
        test_chips,
        size,
        size,
        n_locations,
        len(corrupted),
        out,
        elapsed,
    )
    return out


def read_sample_info(root: Path) -> dict:
    """The generator's ``sample_info.json`` of a dataset root (``{}`` when absent)."""
    path = Path(root) / INFO_NAME
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))

"""Generate a realistic synthetic dataset root in the On Cloud N layout (``sample-data``).

Each chip is a procedural Sentinel-2 L2A scene (reflectance x 10000, uint16, one GeoTIFF per
band, UTM CRS, 10 m pixels, nodata 0):

- ground: a soft mixture of land covers (vegetation, bare soil, dark water, bright desert,
  snow, urban) whose proportions depend on the location's biome, with texture;
- thin cirrus-like haze: a semi-transparent bluish veil, labelled *clear*;
- cloud shadows: the cloud opacity shifted along the sun direction, darkening the ground;
- clouds: multi-scale noise turned into an opacity with soft edges; thick cores exceed 10,000
  (values are never clipped at a guessed maximum, only at the uint16 limit);
- nodata borders (a diagonal swath edge) on some chips, zero in every band and label 0;
- sensor noise.

The label is cloud where the cloud opacity exceeds 0.5, so thin cloud edges and haze below
that are clear, as in On Cloud N labels. Bright desert and snow make a brightness threshold
fail, so the data is a real learning problem. Optionally a fraction of training chips gets a
corrupted label (inverted, all cloud, or snow marked as cloud), recorded in
``sample_info.json`` and in the label file's ``ONCLOUDN_LABEL_NOISE`` tag.

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

from oncloudn.errors import DataError
from oncloudn.runtime.chipio import BANDS

logger = logging.getLogger(__name__)

INFO_NAME = "sample_info.json"
GENERATOR_VERSION = 1
PIXEL_SIZE = 10.0
CLOUD_LABEL_OPACITY = 0.5
LABEL_NOISE_KINDS = ("inverted", "all_cloud", "snow_as_cloud")
UINT16_MAX = 65535

# Land covers and their L2A reflectance x 10000 in B02, B03, B04, B08.
COVERS = ("vegetation", "soil", "water", "desert", "snow", "urban")
SPECTRA = np.array(
    [
        [350, 650, 420, 3900],  # vegetation: red low, NIR high
        [1000, 1350, 1750, 2600],  # bare soil
        [520, 480, 330, 170],  # dark water: NIR lowest
        [3300, 4200, 5300, 5900],  # bright reddish desert
        [9300, 9200, 8900, 6600],  # snow: very bright visible, NIR lower
        [1300, 1400, 1550, 2300],  # urban
    ],
    dtype=np.float32,
)
# Relative weights of each cover per biome (same order as COVERS).
BIOMES = {
    "tropical": (6.0, 1.5, 1.5, 0.0, 0.0, 0.5),
    "savanna": (3.0, 3.0, 1.0, 0.3, 0.0, 0.7),
    "desert": (0.3, 2.0, 0.2, 6.0, 0.0, 0.3),
    "snow": (1.5, 0.8, 1.5, 0.0, 5.0, 0.2),
    "farmland": (4.0, 3.0, 0.5, 0.0, 0.0, 1.0),
    "mountain": (2.0, 2.0, 0.5, 0.5, 3.0, 0.2),
}
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


@dataclass
class SyntheticChip:
    """One generated chip.

    Attributes:
        bands: uint16 ``[4, H, W]`` in ``BANDS`` order.
        label: uint8 ``[H, W]`` (1 = cloud).
        cloud_fraction: Fraction of valid pixels labelled cloud (before label noise).
        snow_fraction: Fraction of valid pixels mostly snow.
        snow_mask: ``True`` where the ground is mostly snow (for ``snow_as_cloud`` noise).
        label_noise: Kind of corruption applied to the label, or ``""``.
    """

    bands: np.ndarray
    label: np.ndarray
    cloud_fraction: float
    snow_fraction: float
    snow_mask: np.ndarray
    label_noise: str = ""


def _smooth_matrix(n_in: int, n_out: int) -> np.ndarray:
    """A ``[n_out, n_in]`` matrix that upsamples one axis with a Gaussian kernel."""
    position = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    distance = position[:, None] - np.arange(n_in)[None, :]
    weights = np.exp(-0.5 * (distance / 0.65) ** 2) * (np.abs(distance) < 2.5)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _upsample(fields: np.ndarray, size: int) -> np.ndarray:
    """Upsample ``[F, n, n]`` low-resolution fields to ``[F, size, size]`` (separable)."""
    matrix = _smooth_matrix(fields.shape[-1], size)
    return matrix @ fields @ matrix.T


def fractal_noise(
    rng: np.random.Generator,
    count: int,
    size: int,
    base_cells: int = 3,
    octaves: int = 5,
    persistence: float = 0.55,
) -> np.ndarray:
    """Smooth multi-scale noise ``[count, size, size]`` with zero mean and unit std per field.

    Octaves are summed at a working resolution of at most 128 cells, then upsampled once.
    """
    work = min(size, 128)
    total = np.zeros((count, work, work), np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        cells = min(base_cells * 2**octave, work)
        grid = rng.standard_normal((count, cells, cells), dtype=np.float32)
        total += amplitude * (_upsample(grid, work) if cells < work else grid)
        amplitude *= persistence
    total -= total.mean(axis=(1, 2), keepdims=True)
    total /= total.std(axis=(1, 2), keepdims=True) + 1e-6
    return _upsample(total, size) if work < size else total


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _shift(field: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift a 2-D field by ``(dy, dx)`` pixels, filling with zeros (no wrap-around)."""
    out = np.zeros_like(field)
    h, w = field.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = field[ys, xs]
    return out


def _ground(rng: np.random.Generator, size: int, biome: str) -> tuple[np.ndarray, np.ndarray]:
    """Ground reflectance ``[4, H, W]`` and the per-pixel snow weight ``[H, W]``."""
    weights = np.asarray(BIOMES[biome], np.float32)
    present = weights > 0
    # Per-chip cover proportions vary around the biome's (some chips are all one cover).
    chip_weights = rng.dirichlet(weights[present] * 1.5 + 0.05)
    logits = np.full((len(COVERS), 1, 1), -50.0, np.float32)
    logits[present, 0, 0] = np.log(chip_weights + 1e-6)
    fields = fractal_noise(rng, len(COVERS) + 1, size, base_cells=3, octaves=5)
    scores = logits + 2.2 * fields[: len(COVERS)]
    scores -= scores.max(axis=0, keepdims=True)
    soft = np.exp(3.0 * scores)
    soft /= soft.sum(axis=0, keepdims=True)
    spectra = SPECTRA * rng.uniform(0.8, 1.2, SPECTRA.shape).astype(np.float32)
    ground = np.tensordot(spectra.T, soft, axes=1)  # [4, H, W]
    texture = 1.0 + 0.12 * fields[len(COVERS)]
    return ground * texture, soft[COVERS.index("snow")]


def _cloud_opacity(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cloud opacity ``[H, W]`` in [0, 1] with soft edges, and a core-thickness field."""
    kind = rng.choice(["clear", "overcast", "partial"], p=[0.2, 0.08, 0.72])
    fields = fractal_noise(rng, 2, size, base_cells=int(rng.integers(2, 6)), octaves=6)
    shape, core = fields
    if kind == "clear":
        return np.zeros((size, size), np.float32), core
    if kind == "overcast":
        opacity = _smoothstep(0.85 + 0.25 * shape)
        return opacity.astype(np.float32), core
    cover = 0.03 + 0.9 * rng.beta(1.3, 1.8)
    threshold = np.quantile(shape[::8, ::8], 1.0 - cover)
    softness = rng.uniform(0.3, 1.6)  # wide = many thin, semi-transparent cloud edges
    opacity = _smoothstep((shape - threshold) / softness + 0.5)
    return opacity.astype(np.float32), core


def _nodata_edge(rng: np.random.Generator, size: int) -> np.ndarray:
    """``True`` beyond a diagonal swath edge crossing one corner of the chip."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0.2, 1.3)
    corner = int(rng.integers(4))
    if corner & 1:
        xx = 1.0 - xx
    if corner & 2:
        yy = 1.0 - yy
    return np.cos(angle) * xx + np.sin(angle) * yy < rng.uniform(0.15, 0.6)


def synthesize_chip(
    rng: np.random.Generator, size: int, biome: str, nodata_probability: float = 0.25
) -> SyntheticChip:
    """Generate one chip's bands and label (see the module docstring for the recipe).

    Args:
        rng: The chip's own random generator.
        size: Height and width in pixels.
        biome: Key of ``BIOMES``.
        nodata_probability: Chance that the chip has a nodata swath edge.
    """
    ground, snow = _ground(rng, size, biome)
    opacity, core = _cloud_opacity(rng, size)

    # Cloud shadow: opacity shifted along the sun direction darkens the ground under it.
    distance = rng.uniform(0.02, 0.08) * size
    azimuth = rng.uniform(0, 2 * np.pi)
    shadow = _shift(opacity, int(distance * np.sin(azimuth)), int(distance * np.cos(azimuth)))
    ground *= 1.0 - rng.uniform(0.35, 0.7) * shadow**1.5

    # Thin cirrus-like haze, semi-transparent (labelled clear).
    if rng.random() < 0.45:
        haze = rng.uniform(0.15, 0.48) * _smoothstep(
            0.5 + 0.6 * fractal_noise(rng, 1, size, base_cells=2, octaves=4)[0]
        )
        haze_spectrum = np.array([3800, 3600, 3400, 3000], np.float32)[:, None, None]
        ground = ground * (1.0 - haze) + haze_spectrum * haze

    # Clouds: white, thick cores well past 10,000, thin parts darker.
    base = rng.uniform(5500, 11000)
    cloud_spectrum = np.array([1.0, 0.99, 0.97, 0.93], np.float32) * rng.uniform(
        0.95, 1.05, 4
    ).astype(np.float32)
    brightness = base * (0.45 + 0.55 * opacity) * (1.0 + 0.12 * core)
    cloud = cloud_spectrum[:, None, None] * brightness
    image = ground * (1.0 - opacity) + cloud * opacity

    image *= 1.0 + 0.02 * rng.standard_normal(image.shape, dtype=np.float32)
    bands = np.clip(np.rint(image), 1, UINT16_MAX).astype(np.uint16)
    label = (opacity > CLOUD_LABEL_OPACITY).astype(np.uint8)

    valid = np.ones((size, size), bool)
    if rng.random() < nodata_probability:
        valid = ~_nodata_edge(rng, size)
        bands[:, ~valid] = 0
        label[~valid] = 0
    n_valid = max(int(valid.sum()), 1)
    return SyntheticChip(
        bands=bands,
        label=label,
        cloud_fraction=float(label.sum()) / n_valid,
        snow_fraction=float(((snow > 0.5) & valid).sum()) / n_valid,
        snow_mask=snow > 0.5,
    )


def corrupt_label(chip: SyntheticChip, kind: str) -> str:
    """Corrupt ``chip.label`` in place the way real noisy labels are wrong.

    Falls back to ``inverted`` when the kind would barely change this label (``all_cloud`` on
    a mostly cloudy chip, ``snow_as_cloud`` on a chip without snow). Returns the kind used.
    """
    valid = np.any(chip.bands != 0, axis=0)
    if kind == "all_cloud" and chip.cloud_fraction >= 0.5:
        kind = "inverted"
    if kind == "snow_as_cloud" and chip.snow_fraction < 0.05:
        kind = "inverted"
    if kind == "inverted":
        chip.label = ((chip.label == 0) & valid).astype(np.uint8)
    elif kind == "all_cloud":
        chip.label = valid.astype(np.uint8)
    else:
        chip.label = ((chip.label > 0) | (chip.snow_mask & valid)).astype(np.uint8)
    chip.label_noise = kind
    return kind


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

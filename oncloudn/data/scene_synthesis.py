"""Procedural Sentinel-2 L2A chips: the scene recipe behind ``sample-data``.

Each chip is reflectance x 10000 (uint16, bands B02, B03, B04, B08):

- ground: a soft mixture of land covers (vegetation, bare soil, dark water, bright desert,
  snow, urban) whose proportions depend on the location's biome, with texture;
- thin cirrus-like haze: a semi-transparent bluish veil, labelled *clear*;
- cloud shadows: the cloud opacity shifted along the sun direction, darkening the ground;
- clouds: multi-scale noise turned into an opacity with soft edges; thick cores exceed 10,000
  (values are never clipped at a guessed maximum, only at the uint16 limit);
- nodata borders (a diagonal swath edge) on some chips, zero in every band and label 0;
- sensor noise.

The label is cloud where the cloud opacity exceeds 0.5, so thin cloud edges and haze below
that are clear, as in On Cloud N labels. :func:`corrupt_label` makes a label wrong the way
real labels are (inverted, all cloud, snow marked as cloud). Everything derives from the
random generator passed in. Writing chips to a dataset root is ``sample.py``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

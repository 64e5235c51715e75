"""Picture of the top chips of a ``flag-labels`` ranking, for a person to review.

Each tile is the chip's RGB view (B04, B03, B02; display scaling only: DN / 3000 clipped to
[0, 1], nodata black) with the outline of the label in yellow and of the model's mask
(probability >= threshold) in magenta, under a title with the rank, chip id, location and the
ranking's figures. A legend line sits on top. Drawn with Pillow only; an outline is a mask XOR
its erosion, computed at tile resolution so it stays one pixel wide.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from scipy.ndimage import binary_erosion

from oncloudn.data.chips import DatasetPaths, read_chip
from oncloudn.errors import ConfigError, DataError
from oncloudn.runtime.atomic import atomic_path
from oncloudn.runtime.bands import IGNORE_VALUE

LABEL_COLOUR = (255, 255, 0)
PREDICTION_COLOUR = (255, 0, 255)
BACKGROUND = (24, 24, 24)
TEXT_COLOUR = (230, 230, 230)
RGB_BANDS = ("B04", "B03", "B02")
DISPLAY_DN = 3000.0
"""Reflectance DN shown as full brightness (display scaling only)."""

TILE = 256
COLUMNS = 3
PAD = 6
LINE = 12
TITLE_LINES = 2
LEGEND_HEIGHT = PAD + 2 * LINE


def rgb_view(bands: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """``[3, H, W]`` raw B04/B03/B02 -> ``[H, W, 3]`` uint8 for display; nodata black."""
    scaled = np.clip(bands.astype(np.float32) / DISPLAY_DN, 0.0, 1.0)
    rgb = np.round(scaled * 255).astype(np.uint8).transpose(1, 2, 0)
    rgb[nodata] = 0
    return rgb


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask (inside edge; the image border is not a boundary)."""
    return mask & ~binary_erosion(mask, border_value=1)


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    return np.asarray(image) > 0


def chip_tile(rgb: np.ndarray, label: np.ndarray, prediction: np.ndarray, size: int) -> np.ndarray:
    """The ``[size, size, 3]`` tile of one chip: RGB view, label and prediction outlines."""
    image = Image.fromarray(rgb).resize((size, size), Image.BILINEAR)
    tile = np.array(image)
    tile[outline(_resize_mask(label, size))] = LABEL_COLOUR
    tile[outline(_resize_mask(prediction, size))] = PREDICTION_COLOUR
    return tile


def tile_origin(index: int, size: int = TILE, columns: int = COLUMNS) -> tuple[int, int]:
    """``(left, top)`` pixel of tile ``index``'s image (below its title) in the grid."""
    row, column = divmod(index, columns)
    left = PAD + column * (size + PAD)
    top = LEGEND_HEIGHT + PAD + row * (TITLE_LINES * LINE + size + PAD) + TITLE_LINES * LINE
    return left, top


def _title(row: pd.Series) -> tuple[str, str]:
    mark = "  INVERTED?" if bool(row["likely_inverted"]) else ""
    first = f"#{int(row['rank'])} {row['chip_id']} {row['location']}"
    second = (
        f"J {row['jaccard']:.2f} invJ {row['inverted_jaccard']:.2f} "
        f"cl {row['label_cloud_fraction']:.2f}/{row['pred_cloud_fraction']:.2f}{mark}"
    )
    return first, second


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    while text and draw.textlength(text) > width:
        text = text[:-1]
    return text


def _draw_legend(draw: ImageDraw.ImageDraw, threshold: float) -> None:
    x = PAD
    for text, colour in (
        ("label outline", LABEL_COLOUR),
        (f"model mask outline (p >= {threshold:.2f})", PREDICTION_COLOUR),
    ):
        draw.rectangle([x, PAD + 1, x + 10, PAD + 9], outline=colour, width=2)
        draw.text((x + 14, PAD), text, fill=colour)
        x += 14 + int(draw.textlength(text)) + 16
    explanation = "J / invJ: Jaccard of model mask vs label / inverted label; cl: cloud label/pred"
    draw.text((PAD, PAD + LINE), explanation, fill=TEXT_COLOUR)


def draw_flag_plot(
    frame: pd.DataFrame,
    probabilities: Mapping[str, np.ndarray],
    paths: DatasetPaths,
    top: int = 6,
    threshold: float = 0.5,
    size: int = TILE,
) -> Image.Image:
    """Grid image of the first ``top`` rows of a ranking from :func:`flag_labels`.

    Raises:
        ConfigError: ``top`` < 1.
        DataError: The ranking is empty.
    """
    if top < 1:
        raise ConfigError(f"the plot needs at least 1 chip (got top={top}); pass a positive K")
    rows = frame.head(top)
    if rows.empty:
        raise DataError("the ranking has no chips to plot")
    columns = min(COLUMNS, len(rows))
    grid_rows = math.ceil(len(rows) / columns)
    width = max(PAD + columns * (size + PAD), 640)
    height = LEGEND_HEIGHT + PAD + grid_rows * (TITLE_LINES * LINE + size + PAD)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    _draw_legend(draw, threshold)
    for index, (_, row) in enumerate(rows.iterrows()):
        chip = read_chip(paths, row["chip_id"], RGB_BANDS, with_label=True)
        valid = chip.label != IGNORE_VALUE
        prediction = (probabilities[row["chip_id"]] >= threshold) & valid
        tile = chip_tile(rgb_view(chip.bands, chip.nodata), chip.label == 1, prediction, size)
        left, top_y = tile_origin(index, size, columns)
        canvas.paste(Image.fromarray(tile), (left, top_y))
        for line, text in enumerate(_title(row)):
            y = top_y - TITLE_LINES * LINE + line * LINE
            draw.text((left, y), _fit(draw, text, size), fill=TEXT_COLOUR)
    return canvas


def write_flag_plot(
    frame: pd.DataFrame,
    probabilities: Mapping[str, np.ndarray],
    paths: DatasetPaths,
    path: str | Path,
    top: int = 6,
    threshold: float = 0.5,
    size: int = TILE,
) -> Path:
    """Draw :func:`draw_flag_plot` and write it as PNG atomically; returns ``path``."""
    path = Path(path)
    image = draw_flag_plot(frame, probabilities, paths, top, threshold, size)
    with atomic_path(path) as temp:
        image.save(temp, format="PNG", optimize=True)
    return path

"""flag-labels --plot draws the top chips with label and model mask outlines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flag_fixtures import inverted_label_sample
from PIL import Image

from oncloudn.cli.main import main
from oncloudn.training.flag_plot import (
    LABEL_COLOUR,
    PREDICTION_COLOUR,
    TILE,
    outline,
    rgb_view,
    tile_origin,
)


def _has_colour(pixels: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool(np.all(pixels == np.array(colour, np.uint8), axis=-1).any())


def test_plot_draws_the_top_chips(tmp_path: Path, capsys) -> None:
    sample = inverted_label_sample(tmp_path)
    plot = tmp_path / "review" / "flags.png"
    argv = ["flag-labels", str(sample.oof), str(sample.root), "--out", str(tmp_path / "f.csv")]
    assert main([*argv, "--plot", str(plot), "--plot-top", "4"]) == 0
    assert f"-> {plot}" in capsys.readouterr().out
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        pixels = np.asarray(image)
    # 4 chips: 3 columns x 2 rows of tiles.
    left, top = tile_origin(3, TILE)
    assert pixels.shape[0] == tile_origin(5, TILE)[1] + TILE + 6 and top > tile_origin(0)[1]
    assert pixels.shape[1] >= 3 * TILE and left == tile_origin(0)[0]
    x, y = tile_origin(0, TILE)
    first = pixels[y : y + TILE, x : x + TILE]
    # The inverted chip comes first: its label and the model's mask both have outlines there.
    assert _has_colour(first, LABEL_COLOUR) and _has_colour(first, PREDICTION_COLOUR)
    assert not list(plot.parent.glob("*.tmp*"))


@pytest.mark.parametrize("bad", ["0", "-2"])
def test_bad_plot_top_is_one_line_error(tmp_path: Path, capsys, bad: str) -> None:
    argv = ["flag-labels", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "f.csv")]
    assert main([*argv, "--plot", str(tmp_path / "p.png"), "--plot-top", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--plot-top" in err and bad in err


def test_outline_and_rgb_view() -> None:
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    edge = outline(mask)
    assert edge.sum() == 12 and not edge[2:4, 2:4].any()
    assert not outline(np.ones((4, 4), bool)).any()  # the image border is no boundary
    bands = np.full((3, 2, 2), 6000, np.uint16)
    bands[:, 0, 0] = 1500
    nodata = np.zeros((2, 2), bool)
    nodata[1, 1] = True
    rgb = rgb_view(bands, nodata)
    assert rgb[0, 0].tolist() == [128] * 3 and rgb[0, 1].tolist() == [255] * 3
    assert rgb[1, 1].tolist() == [0, 0, 0]

"""The runtime's rules for a predictions folder: each one is caught; write_mask output passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from oncloudn.errors import SubmissionError
from oncloudn.runtime.chipio import write_mask
from oncloudn.scoring import checks
from oncloudn.scoring.checks import (
    MAX_LISTED,
    assert_valid_predictions,
    check_prediction_folder,
    find_problems,
)

CHIPS = ["0000", "abcd", "zz_long_name"]


def random_mask(seed: int, size: int = 512) -> np.ndarray:
    return (np.random.default_rng(seed).random((size, size)) < 0.3).astype(np.uint8)


@pytest.fixture
def valid_dir(tmp_path: Path) -> Path:
    pred_dir = tmp_path / "predictions"
    for seed, chip_id in enumerate(CHIPS):
        write_mask(str(pred_dir / f"{chip_id}.tif"), random_mask(seed))
    return pred_dir


def problems_of(pred_dir: Path) -> list[str]:
    return check_prediction_folder(pred_dir, CHIPS, progress=False)


def test_write_mask_output_passes(valid_dir):
    assert problems_of(valid_dir) == []
    assert_valid_predictions(valid_dir, CHIPS, progress=False)
    # georeferenced masks too
    from rasterio.transform import from_origin

    write_mask(
        str(valid_dir / "abcd.tif"),
        random_mask(9),
        crs="EPSG:32633",
        transform=from_origin(500000, 4000000, 10, 10),
    )
    assert problems_of(valid_dir) == []


def test_missing_chip(valid_dir):
    (valid_dir / "abcd.tif").unlink()
    assert problems_of(valid_dir) == ["abcd.tif: missing (expected one prediction per chip)"]


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("efgh.tif", "extra chip"),
        (".hidden.tif", "hidden file"),
        (".DS_Store", "hidden file"),
        ("abcd.tif.tmp", "unexpected file"),
        ("notes.txt", "unexpected file"),
    ],
)
def test_extra_files(valid_dir, name, phrase):
    (valid_dir / name).write_bytes(b"x")
    problems = problems_of(valid_dir)
    assert len(problems) == 1
    assert problems[0].startswith(name) and phrase in problems[0]


def test_leftover_subfolder(valid_dir):
    (valid_dir / ".tmp-123").mkdir()
    assert "sub-folder" in problems_of(valid_dir)[0]


def test_wrong_shape(valid_dir):
    write_mask(str(valid_dir / "abcd.tif"), random_mask(1, size=256))
    [problem] = problems_of(valid_dir)
    assert "abcd.tif" in problem and "(256, 256)" in problem


def test_value_two(valid_dir):
    mask = random_mask(1)
    mask[10, 10] = 2
    write_mask(str(valid_dir / "abcd.tif"), mask)
    [problem] = problems_of(valid_dir)
    assert "values other than 0 and 1" in problem and "e.g. 2" in problem


def test_oversize_file(valid_dir):
    tifffile.imwrite(valid_dir / "abcd.tif", random_mask(1, size=1024))
    problems = problems_of(valid_dir)
    assert any("over the limit of 524,288" in p for p in problems)
    assert any("(1024, 1024)" in p for p in problems)


def test_oversize_file_of_right_shape(valid_dir):
    # uint16 512 x 512 of 0/1: right shape and values, but 512 KiB of pixels plus a header
    tifffile.imwrite(valid_dir / "abcd.tif", random_mask(1).astype(np.uint16))
    [problem] = problems_of(valid_dir)
    assert "over the limit" in problem


@pytest.mark.parametrize("layout", ["rgb", "planar"])
def test_multi_band(valid_dir, layout):
    bands = np.stack([random_mask(s) for s in range(3)])
    if layout == "rgb":
        Image.fromarray(np.moveaxis(bands, 0, -1)).save(valid_dir / "abcd.tif")
    else:
        tifffile.imwrite(valid_dir / "abcd.tif", bands[:2], photometric="minisblack")
    problems = problems_of(valid_dir)
    assert problems and all(p.startswith("abcd.tif") for p in problems)
    assert any("multi-band" in p or "single band" in p for p in problems)


def test_unreadable_file(valid_dir):
    (valid_dir / "abcd.tif").write_bytes(b"not a tiff at all")
    problems = problems_of(valid_dir)
    assert any("cannot be read by PIL" in p for p in problems)
    assert any("cannot be read by tifffile" in p for p in problems)


def test_both_readers_are_used_and_compared(valid_dir, monkeypatch):
    calls = {"PIL": 0, "tifffile": 0}
    real_pil, real_tiff = checks.read_with_pil, checks.read_with_tifffile

    def fake_pil(path):
        calls["PIL"] += 1
        array = real_pil(path)
        if Path(path).name == "abcd.tif":
            array = array.copy()
            array[0, 0] = 1 - array[0, 0]  # what a PIL/tifffile disagreement looks like
        return array

    def counting_tiff(path):
        calls["tifffile"] += 1
        return real_tiff(path)

    monkeypatch.setattr(checks, "read_with_pil", fake_pil)
    monkeypatch.setattr(checks, "read_with_tifffile", counting_tiff)
    [problem] = problems_of(valid_dir)
    assert problem.startswith("abcd.tif") and "PIL and tifffile read different" in problem
    assert calls == {"PIL": len(CHIPS), "tifffile": len(CHIPS)}


def test_missing_folder(tmp_path):
    problems = check_prediction_folder(tmp_path / "nope", CHIPS, progress=False)
    assert len(problems) == 1 and "does not exist" in problems[0]


def test_error_lists_first_offenders_counts_and_fix(tmp_path):
    pred_dir = tmp_path / "predictions"
    pred_dir.mkdir()
    expected = [f"c{index:03d}" for index in range(15)]
    (pred_dir / "stray.txt").write_text("x")
    with pytest.raises(SubmissionError) as caught:
        assert_valid_predictions(pred_dir, expected, progress=False)
    message = str(caught.value)
    assert "15 missing, 1 extra" in message
    assert "c000.tif: missing" in message
    assert f"and {16 - MAX_LISTED} more" in message
    assert "Fix:" in message and "write_mask" in message
    kinds = {p.kind for p in find_problems(pred_dir, expected, progress=False)}
    assert kinds == {"missing", "extra"}

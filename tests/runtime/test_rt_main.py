"""submission/main.py run as a subprocess, from the repo and from a vendored zip-like layout."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from rt_folders import make_threshold_folder, make_unet_folder, make_vendored_code

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "submission" / "main.py"
CHIPS = ["0000", "abcd", "efgh", "ijkl", "mnop", "qrst"]


@pytest.fixture
def test_data(toy_root: Path) -> Path:
    """The toy chips as a runtime data mount: test_features/ + test_metadata.csv."""
    (toy_root / "train_features").rename(toy_root / "test_features")
    (toy_root / "train_metadata.csv").rename(toy_root / "test_metadata.csv")
    return toy_root


def _run_main(main: Path, data: Path, predictions: Path, model: Path, *args: str, env=None):
    env = {**os.environ, **(env or {})}
    env.update(
        ONCLOUDN_DATA_DIR=str(data),
        ONCLOUDN_PREDICTIONS_DIR=str(predictions),
        ONCLOUDN_MODEL_DIR=str(model),
        ONCLOUDN_TIME_BUDGET_S="600",
        CUDA_VISIBLE_DEVICES="",
    )
    return subprocess.run(
        [sys.executable, str(main), *args],
        env=env,
        cwd=str(main.parent),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _check_predictions(predictions: Path) -> None:
    assert sorted(os.listdir(predictions)) == sorted(c + ".tif" for c in CHIPS)
    for chip_id in CHIPS:
        path = predictions / f"{chip_id}.tif"
        with Image.open(path) as image:
            pil = np.array(image)
        tiff = tifffile.imread(path)
        assert pil.shape == tiff.shape == (512, 512) and tiff.dtype == np.uint8
        assert set(np.unique(pil)) <= {0, 1} and set(np.unique(tiff)) <= {0, 1}


@pytest.mark.parametrize("kind", ["threshold", "unet"])
def test_main_writes_one_valid_file_per_chip(test_data: Path, tmp_path: Path, kind: str) -> None:
    if kind == "threshold":
        model = make_threshold_folder(tmp_path / "model")
    else:
        model = make_unet_folder(tmp_path / "model", tta=["hflip"])
    (test_data / "test_features" / "abcd" / "B08.tif").unlink()
    predictions = tmp_path / "predictions"
    result = _run_main(MAIN, test_data, predictions, model)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_predictions(predictions)
    assert "1 fallbacks" in result.stderr
    assert "test_metadata.csv lists 6 chips" in result.stderr
    if kind == "threshold":
        cloud = tifffile.imread(predictions / "0000.tif").mean()
        assert 0.05 < cloud < 0.5  # the toy chip's bright square is about 11 % of it


def test_broken_model_folder_falls_back_to_the_rule(test_data: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text("{not json")
    predictions = tmp_path / "predictions"
    result = _run_main(MAIN, test_data, predictions, model, "--batch-size", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the threshold rule" in result.stderr
    _check_predictions(predictions)


def test_vendored_layout_runs_without_the_rest_of_the_package(
    test_data: Path, tmp_path: Path
) -> None:
    """main.py + oncloudn/__init__.py + oncloudn/runtime/ + model/, as in submission.zip."""
    zip_root = make_vendored_code(tmp_path / "codeexecution")
    make_unet_folder(zip_root / "model")
    predictions = tmp_path / "predictions"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONCLOUDN_")}
    env.update(
        ONCLOUDN_DATA_DIR=str(test_data),
        ONCLOUDN_PREDICTIONS_DIR=str(predictions),
        CUDA_VISIBLE_DEVICES="",
    )
    result = subprocess.run(
        [sys.executable, "main.py"],
        env=env,
        cwd=str(zip_root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"oncloudn.runtime from {zip_root / 'oncloudn' / 'runtime'}," in result.stderr
    assert f"from {zip_root / 'model'}" in result.stderr  # the model folder beside main.py
    _check_predictions(predictions)
    assert not any(p.name.startswith(".") for p in predictions.iterdir())


def test_summary_json_beside_the_predictions(test_data: Path, tmp_path: Path) -> None:
    """--summary / ONCLOUDN_SUMMARY_PATH: the summary as JSON, never inside the predictions."""
    model = make_threshold_folder(tmp_path / "model")
    predictions = tmp_path / "predictions"
    summary = tmp_path / "out" / "summary.json"
    result = _run_main(MAIN, test_data, predictions, model, "--summary", str(summary))
    assert result.returncode == 0, result.stderr[-3000:]
    _check_predictions(predictions)
    written = json.loads(summary.read_text())
    assert written["n_chips"] == len(CHIPS) and written["n_written"] == len(CHIPS)
    assert written["model_error"] is None and written["n_missing"] == 0
    assert "summary: {" in result.stderr  # the log line stays
    assert not [p for p in summary.parent.iterdir() if p.name.startswith(".")]
    inside = predictions / "summary.json"
    refused = _run_main(MAIN, test_data, predictions, model, "--summary", str(inside))
    assert refused.returncode == 2 and "inside the predictions folder" in refused.stderr
    assert not inside.exists()


def test_summary_names_a_model_that_did_not_load(test_data: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text("{not json")
    summary = tmp_path / "summary.json"
    env_summary = {"ONCLOUDN_SUMMARY_PATH": str(summary)}
    result = _run_main(MAIN, test_data, tmp_path / "predictions", model, env=env_summary)
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(summary.read_text())
    assert written["model_error"] and written["model_dir"] == str(model)
    assert written["n_written"] == len(CHIPS)

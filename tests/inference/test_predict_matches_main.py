"""``oncloudn predict`` and a packed ``main.py`` share one prediction core: identical masks.

The folder holds the chips that used to make the two loops differ: a missing band, a corrupt
TIFF, an all-nodata chip and a chip without CRS, beside ordinary ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from toydata import write_tif, write_toy_dataset

from oncloudn.cli.main import main
from oncloudn.models.folder import save_model_folder
from oncloudn.runtime.bands import BANDS
from oncloudn.runtime.manifest import Manifest, PostprocessSpec
from oncloudn.runtime.networks import build_network
from oncloudn.submission.pack import pack_submission

CHIPS = ["0000", "abcd", "efgh", "ijkl", "mnop", "qrst"]


def _faulty_features(root: Path) -> Path:
    features = root / "test_features"
    (features / "abcd" / "B08.tif").unlink()  # missing band
    (features / "efgh" / "B03.tif").write_bytes(b"not a TIFF" * 50)  # corrupt TIFF
    for band in BANDS:  # all nodata
        write_tif(features / "ijkl" / f"{band}.tif", np.zeros((512, 512), np.uint16))
    for band in BANDS:  # no CRS, no transform
        path = features / "mnop" / f"{band}.tif"
        with rasterio.open(path) as src:
            data = src.read(1)
        write_tif(path, data, crs=None)
    return features


def _read(path: Path) -> tuple[np.ndarray, object, object]:
    with rasterio.open(path) as src:
        return src.read(1), src.crs, src.transform


def test_predict_and_main_write_identical_masks(tmp_path: Path) -> None:
    root = write_toy_dataset(tmp_path / "data", CHIPS, ["A"] * 3 + ["B"] * 3, "test", seed=4)
    features = _faulty_features(root)
    args = {"widths": [4, 8, 16]}
    manifest = Manifest(
        name="student",
        architecture={"name": "unet", "args": args},
        tta=["flips"],
        threshold=0.45,
        postprocess=PostprocessSpec(opening=1, min_area=20),
    )
    model = save_model_folder(
        tmp_path / "m", manifest, state_dict=build_network("unet", args, 4, 1)
    )
    code = tmp_path / "codeexecution"
    with zipfile.ZipFile(pack_submission([model], tmp_path / "s.zip").path) as archive:
        archive.extractall(code)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    env.update(ONCLOUDN_DATA_DIR=str(root), ONCLOUDN_PREDICTIONS_DIR=str(tmp_path / "main"))
    result = subprocess.run(
        [sys.executable, "main.py"], cwd=code, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(["predict", str(model), str(features), str(tmp_path / "lib"), "--no-progress"]) == 0
    for chip_id in CHIPS:
        ours, crs, transform = _read(tmp_path / "lib" / f"{chip_id}.tif")
        theirs, main_crs, main_transform = _read(tmp_path / "main" / f"{chip_id}.tif")
        np.testing.assert_array_equal(ours, theirs, err_msg=chip_id)
        assert (crs, transform) == (main_crs, main_transform), chip_id
    assert not _read(tmp_path / "lib" / "ijkl.tif")[0].any()
    assert _read(tmp_path / "lib" / "mnop.tif")[1] is None
    assert _read(tmp_path / "lib" / "abcd.tif")[1] is not None  # fallback keeps georeference

"""Scene-scale prediction: tiled and streamed equals whole-image, nodata, memory, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from scene_fixtures import median_probability, read_mask, tiny_unet_folder, whole_image_mask

from oncloudn.cli.main import main
from oncloudn.data.scene_raster import write_synthetic_scene
from oncloudn.errors import ConfigError, DataError
from oncloudn.inference import scene_predict
from oncloudn.inference.scene_bench import jp2_bands
from oncloudn.inference.scene_predict import SceneOptions, predict_scene
from oncloudn.inference.scene_source import open_scene
from oncloudn.models.builders import make_threshold_folder
from oncloudn.runtime.bands import BANDS

REPO = Path(__file__).resolve().parents[2]
L1C_TILE = "T33UUU_20170216"
MIN_AGREEMENT = 0.999


def _generated_scene(folder: Path, side: int) -> Path:
    """A generated ``side x side`` scene with a nodata swath edge."""
    return write_synthetic_scene(folder / f"scene-{side}.tif", side, side, seed=3, pool=3)


@pytest.fixture(scope="module")
def unet(tmp_path_factory) -> Path:
    return tiny_unet_folder(tmp_path_factory.mktemp("unet") / "model")


def _read_scene(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def _check_tiled_matches_whole_image(unet: Path, folder: Path, side: int) -> None:
    scene = _generated_scene(folder, side)
    out = folder / "mask.tif"
    options = SceneOptions(window=512, overlap=64, strip_rows=300, progress=False)
    summary = predict_scene(unet, scene, out, options, device="cpu")
    raw = _read_scene(scene)
    mask, profile = read_mask(out)
    reference = whole_image_mask(unet, raw)
    assert _agreement(mask, reference) >= MIN_AGREEMENT
    assert 0.01 < reference.mean() < 0.99  # both classes present: the comparison means something
    nodata = np.all(raw == 0, axis=0)
    assert nodata.mean() > 0.1 and not mask[nodata].any()  # the nodata edge stays 0
    assert set(np.unique(mask)) <= {0, 1} and profile["dtype"] == "uint8"
    assert profile["tiled"] and profile["compress"] == "deflate"
    with rasterio.open(scene) as src:
        assert profile["crs"] == src.crs and profile["transform"] == src.transform
    side_windows = len(range(0, side - 512, 448)) + 1
    assert summary["windows_predicted"] + summary["windows_skipped_nodata"] == side_windows**2
    assert not (folder / ".mask.tif.partial").exists()


def test_tiled_scene_matches_whole_image_on_a_generated_1024_scene(
    unet: Path, tmp_path: Path
) -> None:
    _check_tiled_matches_whole_image(unet, tmp_path, 1024)


def test_tiled_scene_matches_whole_image_on_a_generated_2048_scene(
    unet: Path, tmp_path: Path
) -> None:
    _check_tiled_matches_whole_image(unet, tmp_path, 2048)


def _rebuild_l1c_tile(features: Path, folder: Path) -> tuple[Path, np.ndarray]:
    """The 768 x 1536 tile behind the six 512 x 512 windows, as one GeoTIFF per band."""
    tile = np.zeros((len(BANDS), 768, 1536), np.uint16)
    for y in (256, 0):
        for x in (0, 512, 1024):
            chip = features / f"{L1C_TILE}_y{y}_x{x}"
            for index, band in enumerate(BANDS):
                with rasterio.open(chip / f"{band}.tif") as src:
                    tile[index, y : y + 512, x : x + 512] = src.read(1)
    with rasterio.open(features / f"{L1C_TILE}_y0_x0" / "B02.tif") as src:
        crs, transform = src.crs, src.transform
    with rasterio.open(features / f"{L1C_TILE}_y256_x0" / "B02.tif") as src:
        assert src.transform.f == transform.f - 256 * 10.0  # the rows really overlap by 256
    folder.mkdir()
    for index, band in enumerate(BANDS):
        profile = {"driver": "GTiff", "height": 768, "width": 1536, "count": 1}
        profile.update(dtype="uint16", crs=crs, transform=transform)
        with rasterio.open(folder / f"{L1C_TILE}_{band}_10m.tif", "w", **profile) as dst:
            dst.write(tile[index], 1)
    return folder, tile


@pytest.mark.real_data
def test_tiled_scene_matches_whole_image_on_the_real_l1c_tile(
    shared_data: Path, unet: Path, tmp_path: Path
) -> None:
    features = shared_data / "s2-l1c-unlabeled" / "train_features"
    folder, tile = _rebuild_l1c_tile(features, tmp_path / "R10m")
    # The untrained net's probabilities on bright L1C DN sit on one side of 0.5: threshold
    # at their median so the comparison sees both classes.
    unet = tiny_unet_folder(tmp_path / "unet", threshold=median_probability(unet, tile))
    out = tmp_path / "mask.tif"
    options = SceneOptions(window=512, overlap=64, strip_rows=200, progress=False)
    summary = predict_scene(unet, folder, out, options, device="cpu")
    mask, profile = read_mask(out)
    assert mask.shape == (768, 1536) and summary["windows"] == 8
    reference = whole_image_mask(unet, tile)
    assert _agreement(mask, reference) >= MIN_AGREEMENT
    assert 0.01 < reference.mean() < 0.99  # both classes present (the threshold is set so)
    assert profile["transform"] == from_origin(330000.0, 5822040.0, 10.0, 10.0)


def _write_product(root: Path, raw: np.ndarray, offset: int | None) -> Path:
    """A SAFE-like L2A product: metadata at the root, 10 m and 20 m band files."""
    r10 = root / "GRANULE" / "L2A_T00XXX" / "IMG_DATA" / "R10m"
    r20 = root / "GRANULE" / "L2A_T00XXX" / "IMG_DATA" / "R20m"
    for folder in (r10, r20):
        folder.mkdir(parents=True)
    offsets = "".join(f'<BOA_ADD_OFFSET band_id="{i}">{offset}</BOA_ADD_OFFSET>' for i in range(13))
    body = f"<Product_Image_Characteristics>{offsets if offset is not None else ''}"
    body += "<BOA_QUANTIFICATION_VALUE>10000</BOA_QUANTIFICATION_VALUE>"
    body += "</Product_Image_Characteristics>"
    (root / "MTD_MSIL2A.xml").write_text(
        f'<?xml version="1.0"?><n1:Level-2A_User_Product xmlns:n1="https://psd-14">'
        f"<n1:General_Info>{body}</n1:General_Info></n1:Level-2A_User_Product>"
    )
    _, height, width = raw.shape
    profile = {"driver": "GTiff", "height": height, "width": width, "count": 1}
    profile.update(dtype="uint16", crs="EPSG:32633", transform=from_origin(0, 0, 10, 10))
    for index, band in enumerate(BANDS):
        for folder, suffix, data in ((r10, "10m", raw[index]), (r20, "20m", raw[index] // 2)):
            with rasterio.open(folder / f"T00XXX_{band}_{suffix}.tif", "w", **profile) as dst:
                dst.write(data, 1)
    return root


def test_l2a_offset_is_read_from_the_product_metadata(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(900, 6000, (4, 96, 128), dtype=np.uint16)
    raw[:, :, :20] = 0  # nodata
    product = _write_product(tmp_path / "S2X_MSIL2A.SAFE", raw, offset=-1000)
    source = open_scene(product, list(BANDS))
    assert source.offsets == [-1000.0] * 4 and source.offset_source.endswith("MTD_MSIL2A.xml")
    assert all("R10m" in path for path in source.paths)  # 10 m files win over 20 m ones
    values, nodata = source.read(0, 0, 96, 128)
    source.close()
    assert nodata[:, :20].all() and not nodata[:, 20:].any()
    expected = np.maximum(raw.astype(np.float32) - 1000, 0)
    np.testing.assert_array_equal(values[:, :, 20:], expected[:, :, 20:])

    model = make_threshold_folder(tmp_path / "thr", threshold=0.3)
    out = tmp_path / "mask.tif"
    options = SceneOptions(window=64, overlap=16, progress=False)
    summary = predict_scene(model, product, out, options, device="cpu")
    assert summary["offsets"] == [-1000.0] * 4
    mask, _ = read_mask(out)
    np.testing.assert_array_equal(mask, whole_image_mask(model, raw, offset=-1000))
    old = _write_product(tmp_path / "old.SAFE", raw, offset=None)  # baseline < 04.00
    assert open_scene(old, list(BANDS)).offsets == [0.0] * 4
    assert open_scene(old, list(BANDS), offset=-1000).offset_source == "option"


def test_all_nodata_windows_are_skipped_and_stay_zero(tmp_path: Path) -> None:
    scene = write_synthetic_scene(tmp_path / "s.tif", 512, 1024, seed=1, pool=1)
    with rasterio.open(scene, "r+") as dst:
        dst.write(np.zeros((4, 512, 400), np.uint16), window=((0, 512), (0, 400)))
    model = make_threshold_folder(tmp_path / "thr", threshold=0.0)  # everything valid is cloud
    out = tmp_path / "mask.tif"
    options = SceneOptions(window=256, overlap=32, progress=False, probabilities=tmp_path / "p.tif")
    summary = predict_scene(model, scene, out, options, device="cpu")
    assert summary["windows_skipped_nodata"] >= 2
    mask, _ = read_mask(out)
    raw = _read_scene(scene)
    nodata = np.all(raw == 0, axis=0)
    assert not mask[nodata].any() and mask[~nodata].all()
    probability, profile = read_mask(tmp_path / "p.tif")
    assert profile["nodata"] == 255 and (probability[nodata] == 255).all()
    assert (probability[~nodata] <= 254).all()  # valid pixels carry a probability


def _traced_peak(model: Path, scene: Path, out: Path) -> int:
    options = SceneOptions(window=256, overlap=32, strip_rows=256, progress=False)
    tracemalloc.start()
    try:
        predict_scene(model, scene, out, options, device="cpu")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_as_the_scene_grows(tmp_path: Path) -> None:
    model = make_threshold_folder(tmp_path / "thr")
    small = write_synthetic_scene(tmp_path / "small.tif", 1024, 512, seed=2, pool=1)
    large = write_synthetic_scene(tmp_path / "large.tif", 4096, 512, seed=2, pool=1)
    _traced_peak(model, small, tmp_path / "warm.tif")  # first-call allocations out of the way
    peak_small = _traced_peak(model, small, tmp_path / "small-mask.tif")
    peak_large = _traced_peak(model, large, tmp_path / "large-mask.tif")
    scene_bytes = 4096 * 512 * 4 * 4  # the large scene as float32: what holding it would cost
    assert peak_large < 1.25 * peak_small, (peak_small, peak_large)
    assert peak_large < scene_bytes / 2, (peak_large, scene_bytes)


def test_a_killed_run_resumes_to_the_same_output(
    unet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = write_synthetic_scene(tmp_path / "s.tif", 1024, 768, seed=4, pool=2)
    options = SceneOptions(window=256, overlap=32, strip_rows=256, progress=False)
    reference = tmp_path / "reference.tif"
    predict_scene(unet, scene, reference, options, device="cpu")

    original = scene_predict.RunState.mark_rows_done

    def killed_after_two(self, rows_done: int) -> None:
        original(self, rows_done)
        if rows_done == 2:
            raise KeyboardInterrupt

    out = tmp_path / "mask.tif"
    monkeypatch.setattr(scene_predict.RunState, "mark_rows_done", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        predict_scene(unet, scene, out, options, device="cpu")
    assert not out.exists() and (tmp_path / ".mask.tif.partial" / "progress.json").is_file()
    monkeypatch.setattr(scene_predict.RunState, "mark_rows_done", original)
    summary = predict_scene(unet, scene, out, options, device="cpu")
    assert summary["rows_resumed"] == 2 and summary["rows_replayed"] >= 1
    np.testing.assert_array_equal(read_mask(out)[0], read_mask(reference)[0])
    assert not (tmp_path / ".mask.tif.partial").exists()


def test_bad_inputs_are_one_line_errors(tmp_path: Path, capsys) -> None:
    model = make_threshold_folder(tmp_path / "thr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no file for band B02"):
        open_scene(tmp_path / "empty", list(BANDS))
    profile = {"driver": "GTiff", "height": 8, "width": 8, "count": 3, "dtype": "uint16"}
    with rasterio.open(tmp_path / "three.tif", "w", **profile) as dst:
        dst.write(np.ones((3, 8, 8), np.uint16))
    with pytest.raises(ConfigError, match="--band-indices"):
        open_scene(tmp_path / "three.tif", list(BANDS))
    code = main(["predict-scene", str(model), str(tmp_path / "empty"), str(tmp_path / "m.tif")])
    assert code == 2 and "no file for band B02" in capsys.readouterr().err


def test_predict_scene_cli_with_band_indices(tmp_path: Path, capsys) -> None:
    scene = write_synthetic_scene(tmp_path / "s.tif", 300, 200, seed=5, pool=1)
    model = make_threshold_folder(tmp_path / "thr")
    out = tmp_path / "mask.tif"
    args = ["predict-scene", str(model), str(scene), str(out), "--window", "128"]
    args += ["--overlap", "32", "--band-indices", "1,2,3,4", "--no-progress"]
    args += ["--probabilities", str(tmp_path / "p.tif"), "--probability-dtype", "float32"]
    assert main(args) == 0
    assert "300 x 200 px" in capsys.readouterr().out
    mask, _ = read_mask(out)
    np.testing.assert_array_equal(mask, whole_image_mask(model, _read_scene(scene)))
    probability, profile = read_mask(tmp_path / "p.tif")
    assert profile["dtype"] == "float32" and np.nanmax(probability) <= 1.0


def test_bench_scene_is_registered(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "scene", "--help"])
    assert exit_info.value.code == 0 and "--backend" in capsys.readouterr().out


def test_bench_scene_runs_on_a_small_scene(tmp_path: Path, capsys) -> None:
    args = ["bench", "scene", "--size", "256", "--window", "128", "--overlap", "32"]
    args += ["--backend", "torch", "--no-jp2", "--work", str(tmp_path), "--threads", "1"]
    assert main([*args, "--json", str(tmp_path / "bench.json")]) == 0
    out = capsys.readouterr().out
    assert "bench scene: 256 x 256 px" in out and "peak RSS" in out and "stages:" in out
    assert (tmp_path / "mask-256.tif").is_file()


def test_a_sigkilled_cli_run_resumes_to_the_same_output(unet: Path, tmp_path: Path) -> None:
    scene = write_synthetic_scene(tmp_path / "s.tif", 1536, 512, seed=6, pool=2)
    args = [str(unet), str(scene)]
    options = ["--window", "256", "--overlap", "32", "--no-progress", "--device", "cpu"]
    reference = tmp_path / "reference.tif"
    assert main(["predict-scene", *args, str(reference), *options]) == 0
    out = tmp_path / "mask.tif"
    progress = tmp_path / ".mask.tif.partial" / "progress.json"
    command = [sys.executable, "-m", "oncloudn.cli.main", "predict-scene", *args, str(out)]
    child = subprocess.Popen([*command, *options], env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and child.poll() is None:
        if progress.is_file() and json.loads(progress.read_text())["rows_done"] >= 2:
            break
        time.sleep(0.05)
    assert child.poll() is None, "the run ended before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not out.exists()
    assert (
        main(["predict-scene", *args, str(out), *options, "--json", str(tmp_path / "s.json")]) == 0
    )
    assert json.loads((tmp_path / "s.json").read_text())["rows_resumed"] >= 2
    np.testing.assert_array_equal(read_mask(out)[0], read_mask(reference)[0])


def test_jp2_band_files_give_the_same_mask_as_the_geotiff(tmp_path: Path) -> None:
    scene = write_synthetic_scene(tmp_path / "s.tif", 200, 300, seed=7, pool=1)
    folder = jp2_bands(scene, tmp_path / "IMG_DATA" / "R10m")
    if folder is None:
        pytest.skip("GDAL has no JPEG 2000 driver here")
    assert sorted(p.name for p in folder.iterdir())[0] == "T00XXX_B02_10m.jp2"
    model = make_threshold_folder(tmp_path / "thr")
    options = SceneOptions(window=128, overlap=32, progress=False)
    predict_scene(model, folder, tmp_path / "from-jp2.tif", options, device="cpu")
    predict_scene(model, scene, tmp_path / "from-tif.tif", options, device="cpu")
    from_jp2, profile = read_mask(tmp_path / "from-jp2.tif")
    np.testing.assert_array_equal(from_jp2, read_mask(tmp_path / "from-tif.tif")[0])
    with rasterio.open(scene) as src:
        assert profile["crs"] == src.crs and profile["transform"] == src.transform


def test_the_fast_path_gives_the_plain_networks_mask(unet: Path, tmp_path: Path) -> None:
    scene = _generated_scene(tmp_path, 512)
    masks = {}
    for layout in ("off", "auto"):
        options = SceneOptions(window=256, overlap=32, progress=False, fast=layout)
        summary = predict_scene(unet, scene, tmp_path / f"{layout}.tif", options, device="cpu")
        masks[layout] = read_mask(tmp_path / f"{layout}.tif")[0]
        assert (summary["fast_layout"] == "off") == (layout == "off")
    assert _agreement(masks["off"], masks["auto"]) >= 0.9999
    with pytest.raises(ConfigError, match="unknown fast layout 'fastest'"):
        predict_scene(unet, scene, tmp_path / "x.tif", SceneOptions(fast="fastest"), device="cpu")


def test_bench_scene_exports_the_default_student_for_the_fastest_backend(tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="the export extra (openvino) is not installed")
    from oncloudn.config.distill import STUDENT_ARGS
    from oncloudn.inference.scene_bench import _bench_model
    from oncloudn.models.folder import load_model_folder

    folder = _bench_model(tmp_path, None, "auto", threads=1)
    assert folder.name == "student-openvino-1t"
    exported = load_model_folder(folder)
    assert exported.manifest.kind == "openvino" and exported.input_multiple == 32
    student = load_model_folder(tmp_path / "student")
    assert student.manifest.architecture["args"] == STUDENT_ARGS
    assert _bench_model(tmp_path, None, "auto", threads=1) == folder  # made once
    assert load_model_folder(_bench_model(tmp_path, None, "torch", 1)).manifest.kind == "network"
    with pytest.raises(ConfigError, match="openvino, onnx, torch"):
        _bench_model(tmp_path, None, "tensorrt", threads=1)

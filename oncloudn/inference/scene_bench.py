"""``oncloudn bench scene``: time scene prediction on a generated Sentinel-2-sized scene.

In a work folder (kept between runs, so the scene and exports are made once):

1. a ``size x size`` 4-band GeoTIFF scene (``oncloudn.data.scene_raster``, written block by
   block);
2. the model: the given folder, or a seeded untrained default student (``STUDENT_ARGS``:
   plain U-Net, widths 8..128, space-to-depth 2, 492,809 parameters: speed does not depend on
   the weights), exported by ``oncloudn.export`` for ``--backend openvino`` or ``onnx``
   (``auto``: OpenVINO when installed, then ONNX Runtime, then torch with its fast path);
3. ``predict_scene_model`` runs in a fresh child process, so its peak RSS (``ru_maxrss``) is
   the prediction's alone; the summary's seconds per stage say where the time goes (read,
   model, blend, post-process, write; reading overlaps the model in a thread);
4. with GDAL's JPEG 2000 driver, the scene's bands are also encoded once as lossless
   ``*_B0X_10m.jp2`` files (1024 px tiles) and the decoding of every window of the same grid
   is timed separately, as reading a real product would add it.

Figures are only figures: nothing passes or fails. The load average is reported beside them.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import rasterio
import rasterio.shutil
import torch

from oncloudn.config.distill import STUDENT_ARGS
from oncloudn.data.scene_raster import write_synthetic_scene
from oncloudn.errors import ConfigError
from oncloudn.inference.scene_predict import (
    SceneOptions,
    gdal_env,
    model_identity,
    predict_scene_model,
)
from oncloudn.inference.scene_source import open_scene
from oncloudn.inference.scene_windows import window_grid
from oncloudn.models.folder import load_model_folder, save_model_folder
from oncloudn.runtime.bands import BANDS
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.unet import UNet

logger = logging.getLogger(__name__)

# auto: the fastest backend installed (OpenVINO, then ONNX Runtime, then torch's fast path)
BACKENDS = ("auto", "openvino", "onnx", "torch")
_EXPORT_MODULES = {"openvino": "openvino", "onnx": "onnxruntime"}


def _student_manifest(**fields: Any) -> Manifest:
    values = {
        "name": "bench-student",
        "architecture": {"name": "unet", "args": dict(STUDENT_ARGS)},
        "normalization": {"name": "reflectance", "params": {}},
    }
    values.update(fields)
    return Manifest(**values)


def student_folder(work: Path, seed: int = 0) -> Path:
    """A seeded, untrained default student model folder (made once)."""
    folder = work / "student"
    if not (folder / "manifest.json").is_file():
        torch.manual_seed(seed)
        network = UNet(4, 1, **STUDENT_ARGS)
        save_model_folder(folder, _student_manifest(), network)
    return folder


def exported_student_folder(work: Path, backend: str, threads: int) -> Path:
    """The student exported for ``backend`` (``onnx`` or ``openvino``), made once per threads.

    Raises:
        ConfigError: The export needs a package that is not installed.
    """
    folder = work / f"student-{backend}-{threads}t"
    if (folder / "manifest.json").is_file():
        return folder
    try:
        # lazy: the export package pulls onnx / openvino only when a backend needs them
        from oncloudn.export.onnx_export import export_onnx
        from oncloudn.export.openvino_export import export_openvino

        export = export_onnx if backend == "onnx" else export_openvino
        return export(student_folder(work), folder, threads=threads, force=True).folder
    except ImportError as error:
        raise ConfigError(
            f"exporting the student for {backend} needs the export extra ({error}); "
            "pip install -e '.[export]', or use --backend torch"
        ) from None


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _bench_model(work: Path, model_dir: Path | None, backend: str, threads: int) -> Path:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if model_dir is not None:
        return model_dir
    if backend == "auto":
        installed = [name for name, module in _EXPORT_MODULES.items() if _installed(module)]
        backend = installed[0] if installed else "torch"
    if backend == "torch":
        return student_folder(work)
    return exported_student_folder(work, backend, threads)


_BACKEND_NAMES = {"onnx": "onnxruntime", "openvino": "openvino"}


def _child_predict(model_dir: str, scene: str, out: str, options: SceneOptions, threads: int):
    torch.set_num_threads(max(1, threads))
    model = load_model_folder(model_dir, "cpu")
    summary = predict_scene_model(
        model, scene, out, options, device="cpu", model_id=model_identity(model_dir)
    )
    summary["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    summary["kind"] = model.manifest.kind
    return summary


def run_in_child(function, *args: Any) -> Any:
    """``function(*args)`` in a fresh (spawned) process, so its memory is its own."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def jp2_bands(scene: Path, folder: Path) -> Path | None:
    """The scene's bands as lossless JP2 files ``T00XXX_B0X_10m.jp2`` (made once), or
    ``None`` when GDAL has no JPEG 2000 driver."""
    with rasterio.Env() as env:
        if "JP2OpenJPEG" not in env.drivers():
            return None
    folder.mkdir(parents=True, exist_ok=True)
    for index, band in enumerate(BANDS, start=1):
        target = folder / f"T00XXX_{band}_10m.jp2"
        if target.is_file():
            continue
        single = folder / f".{band}.tif"
        with rasterio.open(scene) as src:
            profile = {**src.profile, "count": 1}
            with rasterio.open(single, "w", **profile) as dst:
                for _, window in src.block_windows(1):
                    dst.write(src.read(index, window=window), 1, window=window)
        rasterio.shutil.copy(
            single,
            target,
            driver="JP2OpenJPEG",
            REVERSIBLE="YES",
            QUALITY=100,
            BLOCKXSIZE=1024,
            BLOCKYSIZE=1024,
        )
        single.unlink()
    return folder


def time_window_reads(scene: Path, window: int, overlap: int) -> float:
    """Seconds to read every window of the grid (all bands) from ``scene``."""
    source = open_scene(scene, list(BANDS))
    grid = window_grid(source.height, source.width, window, overlap)
    start = time.perf_counter()
    try:
        with gdal_env():
            for row in grid.rows:
                for col in grid.cols:
                    source.read(row, col, grid.height, grid.width)
    finally:
        source.close()
    return time.perf_counter() - start


def bench_scene(
    work: str | os.PathLike,
    size: int = 10980,
    model_dir: str | os.PathLike | None = None,
    backend: str = "auto",
    threads: int = 2,
    window: int = 1024,
    overlap: int = 128,
    blend: str = "gaussian",
    batch_size: int = 1,
    jp2: bool = True,
) -> dict[str, Any]:
    """Generate (once) and mask a ``size x size`` scene; figures as a dict.

    Returns:
        size, model, backend, threads, wall_s, seconds per stage, peak_rss_mib, windows,
        generate_s (0 when the scene existed), jp2_decode_s (``None`` without JP2), loadavg.
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    scene = work / f"scene-{size}.tif"
    generate_s = 0.0
    if not scene.is_file():
        start = time.perf_counter()
        write_synthetic_scene(scene, size, size, seed=0)
        generate_s = time.perf_counter() - start
        logger.info("generated %s in %.1f s", scene, generate_s)
    model = _bench_model(work, Path(model_dir) if model_dir else None, backend, threads)
    options = SceneOptions(
        window=window,
        overlap=overlap,
        blend=blend,
        batch_size=batch_size,
        resume=False,
        progress=True,
    )
    out = work / f"mask-{size}.tif"
    summary = run_in_child(_child_predict, str(model), str(scene), str(out), options, threads)
    result = {
        "size": size,
        "model": str(model),
        "backend": _BACKEND_NAMES.get(summary["kind"], "torch"),
        "threads": threads,
        "wall_s": summary["wall_s"],
        "seconds": summary["seconds"],
        "peak_rss_mib": summary["peak_rss_mib"],
        "windows": summary["windows_predicted"],
        "windows_skipped_nodata": summary["windows_skipped_nodata"],
        "generate_s": generate_s,
        "jp2_decode_s": None,
        "loadavg": " ".join(f"{value:.2f}" for value in os.getloadavg()),
    }
    if jp2:
        folder = jp2_bands(scene, work / f"jp2-{size}")
        if folder is not None:
            result["jp2_decode_s"] = time_window_reads(folder, window, overlap)
            result["geotiff_read_s"] = time_window_reads(scene, window, overlap)
    return result

"""Scene-scale prediction: a model folder over a large raster, window by window.

``predict_scene`` (``oncloudn predict-scene MODEL SCENE OUT``) streams a scene of any size
with flat memory in height (buffers are one window tall and the scene wide):

1. **windows** (``scene_windows.py``): ``window`` px squares overlapping by ``overlap``, read
   with rasterio in a background thread one window ahead (``scene_source.py``: band files
   or a multi-band file, the product's DN offset applied); all-nodata windows are skipped;
2. **prediction**: the runtime's array-level core (``predict_probabilities`` with
   ``model_probability_fn``: the manifest's TTA, reflection padding to the network's stride)
   on batches of windows;
3. **blending** (``scene_blend.py``): Gaussian or linear weights, zero on nodata; each
   finished row of windows flushes the rows above the next one to a float32 scratch file
   and is recorded, so a killed run resumes after its last finished row (``scene_store.py``);
4. **post-processing** (``scene_postprocess.py``): the manifest's pixel steps on the blended
   probability in strips with a halo, minimum area and hole filling over scene-wide
   components; chip-level rules off; nodata pixels 0;
5. **output** (``scene_output.py``): a tiled, deflate-compressed uint8 mask GeoTIFF (and
   optional probabilities) with the input's CRS and transform, written to the state folder
   and renamed into place at the end.

The result equals whole-image prediction except within a window's reach of a window edge,
where blended predictions of overlapping windows stand in for the whole image's (nodata
pixels count as probability 0 before post-processing).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from tqdm import tqdm

from oncloudn.errors import ConfigError
from oncloudn.inference.predictor import (
    autocast_context,
    check_fast_layout,
    parse_tta,
    resolve_device,
)
from oncloudn.inference.scene_blend import RowBlender
from oncloudn.inference.scene_output import SceneWriter
from oncloudn.inference.scene_postprocess import postprocess_scene, strips
from oncloudn.inference.scene_source import SceneSource, open_scene
from oncloudn.inference.scene_store import RowFile, RunState
from oncloudn.inference.scene_windows import WindowGrid, blend_weights, window_grid
from oncloudn.models.folder import load_model_folder
from oncloudn.runtime.fast import accelerate_model
from oncloudn.runtime.predict_array import (
    input_multiple,
    model_probability_fn,
    predict_probabilities,
)
from oncloudn.runtime.threads import available_cpus
from oncloudn.runtime.tta import resolve_views

logger = logging.getLogger(__name__)

STATE_VERSION = 1
READ_CACHE_BYTES = 256 * 1024 * 1024
"""GDAL's block cache while reading and writing (its default, 5 % of RAM, grows with the
scene). A row of 1024 px windows over a 10,980 px wide scene touches ~180 MB of blocks
(1024 px JPEG 2000 tiles: two tile rows x 11 tiles x 4 bands x 2 MB); at 128 MB JP2 tiles
were decoded again and again (reading a tile's windows took 3x as long)."""


def gdal_env() -> rasterio.Env:
    """GDAL settings for reading and writing a scene: the block cache above, and decoding
    (JPEG 2000, compressed GeoTIFF blocks) on as many threads as this process may use."""
    return rasterio.Env(GDAL_CACHEMAX=READ_CACHE_BYTES, GDAL_NUM_THREADS=str(available_cpus()))


Window = tuple[int, int, np.ndarray, np.ndarray]
"""A read window: start row, start column, raw DN ``[C, h, w]``, nodata ``[h, w]``."""
TIMING_KEYS = ("read", "read_wait", "model", "blend", "postprocess", "write")


@dataclass
class SceneOptions:
    """How a scene is tiled, blended and written.

    Attributes:
        window: Window side in pixels.
        overlap: Pixels shared by neighbouring windows (at most half a window).
        blend: ``gaussian`` or ``linear``.
        batch_size: Windows per forward pass.
        views: TTA views (default: the manifest's; rotations drop out on non-square windows).
        strip_rows: Rows per post-processing and writing strip.
        probabilities: Also write probabilities to this GeoTIFF.
        probability_dtype: ``uint8`` or ``float32``.
        resume: Resume a killed run of the same scene, model and settings.
        progress: Show a progress bar in windows.
        fast: Fast-path layout for torch networks (``runtime/fast.py``; ``auto`` picks the
            fastest for the device, ``off`` keeps the plain network); other kinds unchanged.
    """

    window: int = 1024
    overlap: int = 128
    blend: str = "gaussian"
    batch_size: int = 1
    views: list[str] | None = None
    strip_rows: int = 1024
    probabilities: str | os.PathLike | None = None
    probability_dtype: str = "uint8"
    resume: bool = True
    progress: bool = True
    fast: str = "auto"


@dataclass
class SceneTimer:
    """Seconds spent per stage (``read`` runs in a background thread, overlapping the model;
    ``read_wait`` is the time the model waited for it)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMING_KEYS, 0.0))

    def add(self, key: str, start: float) -> float:
        """Add the time since ``start`` to ``key``; returns now."""
        now = time.perf_counter()
        self.seconds[key] += now - start
        return now


def _file_identity(paths: Sequence[str | os.PathLike]) -> list[list[Any]]:
    return [
        [str(Path(path).resolve()), os.stat(path).st_size, os.stat(path).st_mtime_ns]
        for path in paths
    ]


def model_identity(model_dir: str | os.PathLike) -> list[list[Any]]:
    """Names, sizes and modification times of a model folder's files (for resuming)."""
    folder = Path(model_dir)
    return _file_identity(sorted(p for p in folder.rglob("*") if p.is_file()))


def _fingerprint(
    source: SceneSource, grid: WindowGrid, options: SceneOptions, views: list[str], model_id: Any
) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "files": _file_identity(source.files()),
        "indexes": source.indexes,
        "offsets": source.offsets,
        "model": model_id,
        "grid": [list(grid.rows), list(grid.cols), grid.height, grid.width],
        "blend": [options.blend, options.overlap],
        "views": views,
    }


def _prefetch(tasks: Iterator[Callable[[], Any]], ahead: int = 1) -> Iterator[Any]:
    """Results of ``tasks`` in order, each computed in a thread ``ahead`` tasks early."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = []
        for task in tasks:
            pending.append(pool.submit(task))
            if len(pending) > ahead:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


class _WindowPredictor:
    """Reads, predicts and blends rows of windows."""

    def __init__(self, model, source, grid, options, views, device, timer):
        self.source, self.grid, self.options, self.timer = source, grid, options, timer
        self.device = device
        self.multiple = input_multiple(model)
        self.probability_fn = model_probability_fn(model, views, autocast_context(device, amp=True))
        self.scene_size = (source.height, source.width)
        self._weights: dict[tuple[bool, ...], np.ndarray] = {}
        self.skipped = 0
        self.predicted = 0

    def weights(self, row: int, col: int) -> np.ndarray:
        """Blend weights of the window at ``(row, col)`` (cached per kind of position)."""
        height, width = self.scene_size
        inner = (row > 0, row + self.grid.height < height, col > 0, col + self.grid.width < width)
        if inner not in self._weights:
            self._weights[inner] = blend_weights(
                self.grid.height, self.grid.width, self.options.overlap, self.options.blend, inner
            )
        return self._weights[inner]

    def _reader(self, row: int, col: int) -> Callable[[], Any]:
        def read() -> Window:
            start = time.perf_counter()
            raw, nodata = self.source.read(row, col, self.grid.height, self.grid.width)
            self.timer.add("read", start)
            return row, col, raw, nodata

        return read

    def windows(self, row_indices: Sequence[int]) -> Iterator[Window]:
        """Windows of the given rows, read one ahead, in row-major order."""
        tasks = (
            self._reader(self.grid.rows[r], col) for r in row_indices for col in self.grid.cols
        )
        start = time.perf_counter()
        for item in _prefetch(tasks):
            self.timer.add("read_wait", start)
            yield item
            start = time.perf_counter()

    def predict_row(self, windows: Iterable[Window], blender: RowBlender) -> None:
        """Predict one row's windows in batches, as they arrive, and add them to ``blender``.

        Windows are consumed one by one (not gathered per row first), so the reader thread
        reads the next window while the model predicts this one.
        """
        batch: list[Window] = []
        for item in windows:
            if item[3].all():
                self.skipped += 1
                continue
            batch.append(item)
            if len(batch) == self.options.batch_size:
                self._predict_batch(batch, blender)
                batch = []
        if batch:
            self._predict_batch(batch, blender)

    def _predict_batch(self, batch: list[Window], blender: RowBlender) -> None:
        start = time.perf_counter()
        raw = np.stack([item[2] for item in batch])
        probability = predict_probabilities(self.probability_fn, raw, self.device, self.multiple)
        start = self.timer.add("model", start)
        for (row, col, _, nodata), window_probability in zip(batch, probability, strict=True):
            blender.add(row, col, window_probability, self.weights(row, col) * ~nodata)
        self.timer.add("blend", start)
        self.predicted += len(batch)


def _row_windows(windows: Iterator[Window], count: int) -> Iterator[Window]:
    """The next ``count`` windows of ``windows`` (one row), lazily."""
    return itertools.islice(windows, count)


def _predict_probability_file(
    model, source, grid, options, views, device, state, probability, timer
) -> dict[str, int]:
    predictor = _WindowPredictor(model, source, grid, options, views, device, timer)
    n_rows, n_cols = len(grid.rows), len(grid.cols)
    done = min(state.rows_done, n_rows)
    base = grid.rows[done] if done < n_rows else source.height
    blender = RowBlender(source.width, grid.height, base)
    # Rebuild the blend of rows below the last flush from the finished rows that reach them.
    replay = [r for r in range(done) if grid.rows[r] + grid.height > base and done < n_rows]
    todo = list(range(done, n_rows))
    windows = predictor.windows(replay + todo)
    for _ in replay:
        predictor.predict_row(_row_windows(windows, n_cols), blender)
    bar = tqdm(
        total=grid.count,
        initial=done * n_cols,
        desc="scene",
        unit="window",
        disable=not options.progress,
    )
    with bar:
        for r in todo:
            predictor.predict_row(_row_windows(windows, n_cols), blender)
            until = grid.rows[r + 1] if r + 1 < n_rows else source.height
            start = time.perf_counter()
            probability.write_rows(blender.base, blender.flush(until))
            timer.add("write", start)
            state.mark_rows_done(r + 1)
            bar.update(n_cols)
    return {
        "windows_predicted": predictor.predicted,
        "windows_skipped_nodata": predictor.skipped,
        "rows_resumed": done,
        "rows_replayed": len(replay),
    }


def _write_outputs(probability, pixels, writer, strip_rows, timer) -> None:
    for start, stop in strips(probability.height, strip_rows):
        began = time.perf_counter()
        values = probability.read_rows(start, stop)
        mask = (pixels.read_rows(start, stop) == 1) & ~np.isnan(values)
        began = timer.add("postprocess", began)
        writer.write(start, mask.astype(np.uint8), values)
        timer.add("write", began)


def _predict_windows(model, source, out, options, views, device, model_id, timer):
    grid = window_grid(source.height, source.width, options.window, options.overlap)
    fingerprint = _fingerprint(source, grid, options, views, model_id)
    state = RunState(out, fingerprint, resume=options.resume)
    probability = RowFile(state.path("probability.f32"), source.height, source.width, "f4")
    counts = _predict_probability_file(
        model, source, grid, options, views, device, state, probability, timer
    )
    return counts, grid, state, probability


def predict_scene_model(
    model: Any,
    scene: str | os.PathLike,
    out: str | os.PathLike,
    options: SceneOptions | None = None,
    bands: Sequence[str] | None = None,
    band_indices: Sequence[int] | None = None,
    offset: float | Sequence[float] | None = None,
    device: str = "cpu",
    model_id: Any = None,
) -> dict[str, Any]:
    """Predict a scene with a loaded model (see the module docstring).

    Args:
        model: A loaded model (``manifest``, ``predict_proba``).
        scene: A folder of band files or a multi-band raster.
        out: The mask GeoTIFF to write.
        options: Tiling, blending and output settings.
        bands: Band names to look for (default: the model's).
        band_indices: For a multi-band file: 1-based index of each band.
        offset: DN offset (default: the product metadata's, else 0).
        device: Where the model runs.
        model_id: What identifies the model for resuming (e.g. :func:`model_identity`).

    Returns:
        Summary: scene size, windows predicted/skipped, resumed rows, offsets, seconds per
        stage, wall seconds, output paths.
    """
    options = options or SceneOptions()
    if options.batch_size < 1 or options.strip_rows < 1:
        raise ConfigError("batch size and strip rows must be >= 1")
    check_fast_layout(options.fast)
    began = time.perf_counter()
    manifest = model.manifest
    model, fast_layout = accelerate_model(model, device, options.fast)
    views = list(options.views or resolve_views(manifest.tta))
    source = open_scene(scene, bands or model.bands, band_indices, offset)
    out = Path(out)
    timer = SceneTimer()
    try:
        with gdal_env():
            counts, grid, state, probability = _predict_windows(
                model, source, out, options, views, device, model_id, timer
            )
    finally:
        source.close()
    start = time.perf_counter()
    pixels = RowFile(state.path("pixels.u8"), source.height, source.width, "u1")
    postprocess_scene(
        probability, pixels, manifest.threshold, manifest.postprocess, options.strip_rows
    )
    timer.add("postprocess", start)
    mask_temp = state.path("mask.tif")
    probability_temp = state.path("probability.tif") if options.probabilities else None
    with (
        gdal_env(),
        SceneWriter(
            mask_temp,
            source.height,
            source.width,
            source.crs,
            source.transform,
            probability_temp,
            options.probability_dtype,
        ) as writer,
    ):
        _write_outputs(probability, pixels, writer, options.strip_rows, timer)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(mask_temp, out)
    if probability_temp is not None:
        Path(options.probabilities).parent.mkdir(parents=True, exist_ok=True)
        os.replace(probability_temp, options.probabilities)
    state.remove()
    return {
        "scene": str(scene),
        "out": str(out),
        "probabilities": str(options.probabilities) if options.probabilities else None,
        "height": source.height,
        "width": source.width,
        "windows": grid.count,
        "window": [grid.height, grid.width],
        "overlap": options.overlap,
        "blend": options.blend,
        **counts,
        "bands": source.bands,
        "files": source.files(),
        "offsets": source.offsets,
        "offset_source": source.offset_source,
        "tta_views": views,
        "device": device,
        "fast_layout": fast_layout,
        "seconds": timer.seconds,
        "wall_s": time.perf_counter() - began,
    }


def predict_scene(
    model_dir: str | os.PathLike,
    scene: str | os.PathLike,
    out: str | os.PathLike,
    options: SceneOptions | None = None,
    bands: Sequence[str] | None = None,
    band_indices: Sequence[int] | None = None,
    offset: float | Sequence[float] | None = None,
    device: str | None = None,
    tta: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Predict a scene with a model folder (see :func:`predict_scene_model`).

    Args:
        model_dir: A model folder.
        scene: A folder of band files or a multi-band raster.
        out: The mask GeoTIFF to write.
        options: Tiling, blending and output settings.
        bands: Band names to look for (default: the model's).
        band_indices: For a multi-band file: 1-based index of each band.
        offset: DN offset (default: the product metadata's, else 0).
        device: ``cpu``, ``cuda``...; default CUDA when available.
        tta: TTA override (preset or view names).

    Raises:
        FileNotFoundError: No such model folder or scene.
        ConfigError: Bad settings.
        DataError: Unusable band files.
    """
    options = options or SceneOptions()
    device = resolve_device(device)
    views = parse_tta(tta)
    if views is not None:
        options.views = views
    model = load_model_folder(model_dir, device)
    return predict_scene_model(
        model,
        scene,
        out,
        options,
        bands=bands,
        band_indices=band_indices,
        offset=offset,
        device=device,
        model_id=model_identity(model_dir),
    )

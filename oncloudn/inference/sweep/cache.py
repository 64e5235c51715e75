"""Per-chip, per-TTA-view probabilities cached once, so a sweep never re-runs the network.

A source is a model folder (``manifest.json``), an out-of-fold ``.npz`` file or folder
written by the trainer (``oof/fold_*.npz``, see :mod:`oncloudn.training.oof`), or a folder of
``<chip_id>.tif`` float32 probabilities (``oncloudn predict --probabilities``). Each gets a
cache folder ``<cache_root>/<name>-<key>/`` (the key hashes the source's path and files, so a
changed model never reads stale probabilities) holding one float16 ``[H, W]`` file per view
and chip, ``<view>/<chip_id>.npy``. Model folders are run once per view through the prediction
core (``predict_batch`` with a single view: the TTA transform, the model's normalization and
head, the inverse transform); saved probabilities have one view, ``identity`` (their TTA is
whatever made them). Files are written atomically and (view, chip) pairs already cached are
skipped, so an interrupted run resumes and a later run with fewer views computes nothing.
Planes are opened memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from tqdm import tqdm

from oncloudn.data.chips import DatasetPaths, read_chip
from oncloudn.errors import DataError
from oncloudn.models.folder import load_model_folder, read_model_manifest
from oncloudn.runtime.atomic import atomic_path, atomic_write_json
from oncloudn.runtime.manifest import MANIFEST_NAME
from oncloudn.runtime.predict import predict_batch
from oncloudn.runtime.tta import resolve_views
from oncloudn.training.oof import read_oof, read_oof_folder

logger = logging.getLogger(__name__)

CACHE_INFO = "cache.json"
SOURCE_KINDS = ("model", "oof", "probabilities")


@dataclass(frozen=True)
class Source:
    """A thing that yields cloud probabilities.

    Attributes:
        path: The model folder, ``.npz`` file or folder.
        kind: ``model``, ``oof`` or ``probabilities``.
        name: A short name for tables (the folder or file name, made unique by the caller).
    """

    path: Path
    kind: str
    name: str


def source_kind(path: str | os.PathLike) -> str:
    """``model``, ``oof`` or ``probabilities`` for a source path.

    Raises:
        FileNotFoundError: The path does not exist or holds none of those.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        return "oof"
    if (path / MANIFEST_NAME).is_file():
        return "model"
    if path.is_dir() and (any(path.glob("fold_*.npz")) or any(path.glob("oof/fold_*.npz"))):
        return "oof"
    if path.is_dir() and any(path.glob("*.tif")):
        return "probabilities"
    raise FileNotFoundError(
        f"{path} is not a source of probabilities: expected a model folder (manifest.json), an "
        "out-of-fold .npz or a run/OOF folder (oof/fold_*.npz) from `oncloudn train`, or a "
        "folder of <chip_id>.tif from `oncloudn predict --probabilities`"
    )


def make_sources(paths: list[str | os.PathLike]) -> list[Source]:
    """Sources for paths, with unique names (``name``, ``name-2``...).

    Raises:
        FileNotFoundError: A path is not a source (see :func:`source_kind`).
    """
    sources: list[Source] = []
    seen: dict[str, int] = {}
    for path in paths:
        path = Path(path)
        kind = source_kind(path)
        base = path.stem if kind == "oof" and path.is_file() else path.name
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        sources.append(Source(path=path, kind=kind, name=name))
    return sources


def source_views(source: Source, views: str | list[str] | None) -> list[str]:
    """The views cached for a source: ``views`` (default ``d4``) for models, else identity."""
    if source.kind != "model":
        return ["identity"]
    return resolve_views(views if views is not None else "d4")


def cache_key(source: Source) -> str:
    """A short hash of the source's absolute path, its manifest, and its files' sizes/times."""
    digest = hashlib.sha256()
    digest.update(str(source.path.resolve()).encode())
    if source.kind == "model":
        manifest = source.path / MANIFEST_NAME
        digest.update(manifest.read_bytes())
        for item in sorted(source.path.iterdir()):
            if item.is_file() and item.name != MANIFEST_NAME:
                digest.update(
                    f"{item.name}:{item.stat().st_size}:{item.stat().st_mtime_ns}".encode()
                )
    else:
        files = [source.path] if source.path.is_file() else sorted(source.path.rglob("*"))
        for item in files:
            if item.is_file():
                digest.update(
                    f"{item.name}:{item.stat().st_size}:{item.stat().st_mtime_ns}".encode()
                )
    return digest.hexdigest()[:12]


def cache_folder(cache_root: str | os.PathLike, source: Source) -> Path:
    """``<cache_root>/<name>-<key>``."""
    return Path(cache_root) / f"{source.name}-{cache_key(source)}"


def plane_path(folder: str | os.PathLike, view: str, chip_id: str) -> Path:
    """``<folder>/<view>/<chip_id>.npy``."""
    return Path(folder) / view / f"{chip_id}.npy"


def _write_plane(path: Path, plane: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp, open(temp, "wb") as stream:
        np.save(stream, np.asarray(plane, dtype=np.float16))


def _saved_probabilities(source: Source, chip_ids: list[str]) -> dict[str, np.ndarray]:
    if source.kind == "oof":
        if source.path.is_file():
            loaded = read_oof(source.path)
        else:
            loaded = read_oof_folder(source.path)
        return {c: loaded[c] for c in chip_ids if c in loaded}
    out = {}
    for chip_id in chip_ids:
        path = source.path / f"{chip_id}.tif"
        if path.is_file():
            with rasterio.open(path) as dataset:
                out[chip_id] = dataset.read(1).astype(np.float32)
    return out


def build_cache(
    source: Source,
    paths: DatasetPaths,
    chip_ids: list[str],
    cache_root: str | os.PathLike,
    views: str | list[str] | None = None,
    device: str = "cpu",
    progress: bool = True,
    threads: int | None = None,
) -> Path:
    """Cache a source's probabilities for ``chip_ids`` (resuming a partial cache).

    Args:
        source: See :func:`make_sources`.
        paths: The labelled dataset the chips come from (features for model folders).
        chip_ids: Chips to cache.
        cache_root: Folder of all caches.
        views: TTA views to cache for model folders (default ``d4``: all eight).
        device: Torch device for model folders.
        progress: Show a progress bar.
        threads: CPU threads of torch while caching (restored after; ``None``: unchanged).
            One thread is often fastest on a shared CPU.

    Returns:
        The source's cache folder.

    Raises:
        DataError: Saved probabilities lack some chips, or have another shape than a label.
    """
    chosen = source_views(source, views)
    folder = cache_folder(cache_root, source)
    todo = {c: [v for v in chosen if not plane_path(folder, v, c).is_file()] for c in chip_ids}
    todo = {c: missing for c, missing in todo.items() if missing}
    if todo:
        logger.info("caching %d chip(s) of %s (views %s)", len(todo), source.name, ",".join(chosen))
        if source.kind == "model":
            previous = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                _cache_model(source, paths, todo, folder, device, progress)
            finally:
                torch.set_num_threads(previous)
        else:
            _cache_saved(source, sorted(todo), folder)
    info = {"source": str(source.path), "kind": source.kind, "name": source.name, "views": chosen}
    if source.kind == "model":
        info["manifest"] = read_model_manifest(source.path).to_dict()
    atomic_write_json(folder / CACHE_INFO, info)
    return folder


def _cache_model(source, paths, todo: dict[str, list[str]], folder, device, progress) -> None:
    model = load_model_folder(source.path, device)
    bands = tuple(model.manifest.bands)
    for chip_id, missing in tqdm(
        sorted(todo.items()), desc=f"cache {source.name}", disable=not progress, leave=False
    ):
        raw = read_chip(paths, chip_id, bands=bands, with_label=False).bands
        for view in missing:
            plane = predict_batch(model, raw[None], device, views=[view])[0]
            _write_plane(plane_path(folder, view, chip_id), plane)


def _cache_saved(source: Source, chip_ids: list[str], folder: Path) -> None:
    saved = _saved_probabilities(source, chip_ids)
    missing = [c for c in chip_ids if c not in saved]
    if missing:
        raise DataError(
            f"{source.path} has no probabilities for {len(missing)} chip(s) of the dataset, "
            f"e.g. {missing[:3]}; pass --chips or a dataset root matching the predictions"
        )
    for chip_id in chip_ids:
        _write_plane(plane_path(folder, "identity", chip_id), saved[chip_id])


def read_cache_info(folder: str | os.PathLike) -> dict:
    """``cache.json`` of a cache folder."""
    return json.loads((Path(folder) / CACHE_INFO).read_text(encoding="utf-8"))


def open_plane(folder: str | os.PathLike, view: str, chip_id: str) -> np.ndarray:
    """A chip's cached float16 probability ``[H, W]`` under one view, memory-mapped."""
    return np.load(plane_path(folder, view, chip_id), mmap_mode="r")

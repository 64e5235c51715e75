"""Cached teacher targets: fp16 logit differences in one memory-mapped file per teacher.

Layout of ``<cache_dir>/<teacher hash>-<TTA views>/`` (one folder per teacher and TTA)::

    targets.f16    the chips' cloud-vs-clear logit differences, float16, appended chip by chip
    index.json     {"format", "teacher", "tta", "end", "entries": {chip content hash:
                    [offset, height, width]}}, rewritten atomically after each batch

Chips are keyed by their *content* hash (SHA-256 of their band files), so a chip that sits in
two roots is computed once and a changed chip is recomputed. Filling is resumable: chips
already in the index are skipped, and bytes a killed run appended after the last index write
are cut off when the cache is opened again. ``<cache_dir>/content_hashes.json`` remembers the
hashes by band files' size and modification time, so a restart does not read every chip again.

Training reads the file through :class:`CachedTargets` (a ``TargetSource`` of kind
``continuous``: the augmentation moves the targets with the image, bilinearly).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from oncloudn.data.chips import read_chip
from oncloudn.data.roots import ChipCatalog, chip_content_hash
from oncloudn.errors import DataError
from oncloudn.runtime.atomic import atomic_write_json
from oncloudn.training.augment import CONTINUOUS
from oncloudn.training.distill.teacher import Teacher

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
DATA_NAME = "targets.f16"
INDEX_NAME = "index.json"
HASHES_NAME = "content_hashes.json"
TEACHER_KEY = "teacher"
DTYPE = np.float16
ITEM = np.dtype(DTYPE).itemsize


def _signature(folder: Path, bands: Sequence[str]) -> list[list[int]]:
    stats = [(folder / f"{band}.tif").stat() for band in bands]
    return [[stat.st_size, stat.st_mtime_ns] for stat in stats]


def content_hashes(
    catalog: ChipCatalog, chip_ids: Sequence[str], bands: Sequence[str], cache_dir: Path
) -> dict[str, str]:
    """``{chip_id: content hash}``, remembered in ``content_hashes.json`` by file size/mtime."""
    memo_path = Path(cache_dir) / HASHES_NAME
    memo: dict[str, Any] = {}
    if memo_path.is_file():
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    hashes: dict[str, str] = {}
    changed = False
    for chip_id in chip_ids:
        paths = catalog.paths_of(chip_id)
        folder = paths.chip_dir(chip_id).resolve()
        key = f"{folder}|{','.join(bands)}"
        signature = _signature(folder, bands)
        known = memo.get(key)
        if known is None or known[0] != signature:
            memo[key] = [signature, chip_content_hash(paths, chip_id, bands)]
            changed = True
        hashes[chip_id] = memo[key][1]
    if changed:
        atomic_write_json(memo_path, memo)
    return hashes


class TargetCache:
    """One teacher's (and TTA's) cached targets (see the module docstring).

    Args:
        folder: The cache folder of the teacher and TTA.
        teacher: Description of the teacher, stored in (and checked against) the index.

    Raises:
        DataError: The folder's index belongs to another teacher or TTA.
    """

    def __init__(self, folder: str | Path, teacher: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.data_path = self.folder / DATA_NAME
        self.index_path = self.folder / INDEX_NAME
        self.index: dict[str, Any] = {
            "format": CACHE_FORMAT,
            TEACHER_KEY: teacher,
            "end": 0,
            "entries": {},
        }
        if self.index_path.is_file():
            stored = json.loads(self.index_path.read_text(encoding="utf-8"))
            if stored.get(TEACHER_KEY) != teacher:
                raise DataError(
                    f"teacher cache {self.folder} belongs to another teacher or TTA "
                    f"({stored.get(TEACHER_KEY)}); delete it or set distillation.cache_dir"
                )
            self.index = stored
        self.folder.mkdir(parents=True, exist_ok=True)
        self._truncate()

    @classmethod
    def of(cls, cache_dir: str | Path, teacher: Teacher) -> TargetCache:
        """The cache of ``teacher`` (its hash and TTA) under ``cache_dir``."""
        key = {"sha256": teacher.sha256, "tta": list(teacher.views)}
        return cls(Path(cache_dir) / teacher.cache_key, key)

    def _truncate(self) -> None:
        """Cut off bytes appended after the last index write (a killed fill)."""
        end = int(self.index["end"]) * ITEM
        if not self.data_path.exists():
            self.data_path.write_bytes(b"")
        if self.data_path.stat().st_size != end:
            with open(self.data_path, "r+b") as stream:
                stream.truncate(end)

    @property
    def entries(self) -> dict[str, list[int]]:
        """``{content hash: [offset, height, width]}`` (offset in float16 elements)."""
        return self.index["entries"]

    def add(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        """Append targets ``[H, W]`` by content hash, then write the index atomically."""
        end = int(self.index["end"])
        with open(self.data_path, "r+b") as stream:
            stream.seek(end * ITEM)
            for content_hash, target in items:
                array = np.ascontiguousarray(target, dtype=DTYPE)
                stream.write(array.tobytes())
                self.entries[content_hash] = [end, int(array.shape[0]), int(array.shape[1])]
                end += array.size
            stream.flush()
            os.fsync(stream.fileno())
        self.index["end"] = end
        atomic_write_json(self.index_path, self.index)

    def fill(
        self,
        teacher: Teacher,
        catalog: ChipCatalog,
        hashes: dict[str, str],
        bands: Sequence[str],
        batch_size: int = 8,
        show: bool = True,
    ) -> int:
        """Compute the targets of every chip of ``hashes`` not cached yet.

        Chips are batched by size; each batch is appended and indexed before the next.

        Returns:
            The number of chips computed.
        """
        todo: dict[str, str] = {}
        seen = set(self.entries)
        for chip_id, content_hash in hashes.items():
            if content_hash not in seen:
                todo[chip_id] = content_hash
                seen.add(content_hash)
        if not todo:
            return 0
        logger.info("teacher cache %s: computing %d chip(s)", self.folder, len(todo))
        pending: dict[tuple[int, ...], list[tuple[str, np.ndarray]]] = {}
        progress = tqdm(total=len(todo), desc="teacher cache", leave=False, disable=not show)
        for chip_id, content_hash in todo.items():
            chip = read_chip(catalog.paths_of(chip_id), chip_id, bands, with_label=False)
            group = pending.setdefault(chip.bands.shape, [])
            group.append((content_hash, chip.bands))
            if len(group) >= batch_size:
                self._run(teacher, group)
                progress.update(len(group))
                group.clear()
        for group in pending.values():
            if group:
                self._run(teacher, group)
                progress.update(len(group))
        progress.close()
        return len(todo)

    def _run(self, teacher: Teacher, group: list[tuple[str, np.ndarray]]) -> None:
        raw = torch.from_numpy(np.stack([bands for _, bands in group]).astype(np.float32))
        targets = teacher.logit_difference(raw).cpu().numpy()
        self.add([(content_hash, targets[i]) for i, (content_hash, _) in enumerate(group)])


class CachedTargets:
    """A ``TargetSource``: the cached teacher target of a chip under the key ``teacher``.

    Picklable for DataLoader workers: the memory map is opened lazily in each process.

    Args:
        cache: The filled cache.
        hashes: ``{chip_id: content hash}`` of the run's chips.
        threshold: Cloud probability of the teacher's hard labels (:meth:`reference`).

    Raises:
        DataError: A chip of ``hashes`` is not in the cache.
    """

    kinds = {TEACHER_KEY: CONTINUOUS}

    def __init__(self, cache: TargetCache, hashes: dict[str, str], threshold: float = 0.5):
        missing = sorted(chip for chip, value in hashes.items() if value not in cache.entries)
        if missing:
            raise DataError(f"teacher cache {cache.folder} lacks {len(missing)} chip(s), e.g. "
                            f"{missing[:3]}; fill it first")  # fmt: skip
        self.data_path = cache.data_path
        self.entries = {chip: cache.entries[value] for chip, value in hashes.items()}
        self.cut = math.log(threshold / (1.0 - threshold))
        self._data: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}

    def target(self, chip_id: str) -> np.ndarray:
        """The chip's teacher logit difference ``[H, W]`` (float32)."""
        if self._data is None:
            self._data = np.memmap(self.data_path, dtype=DTYPE, mode="r")
        offset, height, width = self.entries[chip_id]
        return np.asarray(self._data[offset : offset + height * width], np.float32).reshape(
            height, width
        )

    def __call__(self, chip_id: str) -> dict[str, np.ndarray]:
        """``{"teacher": float32 [H, W]}`` of a chip."""
        return {TEACHER_KEY: self.target(chip_id)}

    def reference(self, chip_id: str) -> np.ndarray:
        """The teacher's hard label of a chip (1 where its probability >= the threshold)."""
        return (self.target(chip_id) >= self.cut).astype(np.uint8)

"""The on-disk state of a scene run: row-major scratch rasters and the progress record.

A run keeps everything in a hidden folder beside its output (``.<out name>.partial``, same
filesystem, so the finished mask is renamed into place atomically):

- ``probability.f32``: the blended cloud probability, float32, row-major, ``NaN`` where the
  scene has no data; written once per finished row of windows, read back in strips (with a
  halo) by the post-processing passes. Plain row-major files make a strip one contiguous
  read or write, and nothing of them stays in memory;
- ``*.u8`` scratch masks of the post-processing passes (0 clear, 1 cloud, 255 nodata);
- ``progress.json``: the run's fingerprint (scene files, model, settings) and how many rows
  of windows are done. A run that finds a matching record resumes after the last finished
  row; a record of another run is discarded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from oncloudn.runtime.atomic import atomic_write_json

logger = logging.getLogger(__name__)

PROGRESS_NAME = "progress.json"


class RowFile:
    """A ``height x width`` raster of one dtype in a plain row-major file.

    Args:
        path: The file (created at full size, sparse, if absent).
        height: Rows.
        width: Columns.
        dtype: numpy dtype of a pixel.
    """

    def __init__(self, path: str | os.PathLike, height: int, width: int, dtype: Any):
        self.path = Path(path)
        self.height, self.width = int(height), int(width)
        self.dtype = np.dtype(dtype)
        size = self.height * self.width * self.dtype.itemsize
        if not self.path.is_file() or self.path.stat().st_size != size:
            with open(self.path, "wb") as stream:
                stream.truncate(size)

    def _offset(self, row: int) -> int:
        return row * self.width * self.dtype.itemsize

    def write_rows(self, row: int, values: np.ndarray) -> None:
        """Write ``values`` ``[rows, width]`` starting at ``row``."""
        values = np.ascontiguousarray(values, dtype=self.dtype)
        with open(self.path, "r+b") as stream:
            stream.seek(self._offset(row))
            stream.write(values.tobytes())

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` (clipped to the raster) as ``[rows, width]``."""
        start, stop = max(0, start), min(self.height, stop)
        count = max(0, stop - start) * self.width
        with open(self.path, "rb") as stream:
            stream.seek(self._offset(start))
            values = np.fromfile(stream, dtype=self.dtype, count=count)
        return values.reshape(-1, self.width)


class RunState:
    """The hidden state folder of one output and its progress record.

    Args:
        out: The output file the run will write.
        fingerprint: What makes two runs the same (JSON-ready).
        resume: Keep a matching record; ``False`` starts over.
    """

    def __init__(self, out: str | os.PathLike, fingerprint: dict[str, Any], resume: bool = True):
        out = Path(out)
        self.folder = out.parent / f".{out.name}.partial"
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        record = self._read() if resume else None
        if record is None or record.get("fingerprint") != self.fingerprint:
            if self.folder.exists():
                logger.info("starting %s over (no matching progress record)", out)
                shutil.rmtree(self.folder)
            record = {"fingerprint": self.fingerprint, "rows_done": 0}
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows_done = int(record["rows_done"])

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / PROGRESS_NAME).read_text())
        except (OSError, ValueError):
            return None

    def path(self, name: str) -> Path:
        """A file inside the state folder."""
        return self.folder / name

    def mark_rows_done(self, rows_done: int) -> None:
        """Record that the first ``rows_done`` rows of windows are written."""
        self.rows_done = rows_done
        atomic_write_json(
            self.folder / PROGRESS_NAME, {"fingerprint": self.fingerprint, "rows_done": rows_done}
        )

    def remove(self) -> None:
        """Delete the state folder (after the output is in place)."""
        shutil.rmtree(self.folder, ignore_errors=True)

"""What proves a downloaded file good: it decodes as the expected single-band TIFF, and its
SHA-256 matches the manifest written when it was fetched.

No per-file checksums are published for the dataset, so the first download can only be
checked by its announced length (and MD5 when the host sends one, see :mod:`.transfer`) and
by decoding it; the manifest then lets every later run verify what is on disk.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import rasterio
from rasterio.errors import NotGeoreferencedWarning

from oncloudn.hashing import sha256_file
from oncloudn.runtime.atomic import atomic_write_json

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
OK, MISSING, MISMATCH, UNKNOWN = "ok", "missing", "mismatch", "unknown"


def expected_dtype(relative: str) -> str:
    """``uint8`` for a label file, ``uint16`` for a band file."""
    return "uint8" if "_labels/" in relative else "uint16"


def decode_tiff(path: Path, dtype: str) -> None:
    """Read every pixel of a single-band TIFF.

    Raises:
        ValueError: Not one band of ``dtype``.
        rasterio.errors.RasterioIOError: It does not decode (truncated, not a TIFF).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as dataset:
            if dataset.count != 1 or dataset.dtypes[0] != dtype:
                raise ValueError(
                    f"{dataset.count} band(s) of {dataset.dtypes[0]}, expected 1 of {dtype}"
                )
            dataset.read(1)


def manifest_path(root: Path, split: str) -> Path:
    """``ROOT/{split}_download_manifest.json``."""
    return Path(root) / f"{split}_download_manifest.json"


@dataclass
class DownloadManifest:
    """SHA-256 and size of every file a download put into the dataset root.

    Attributes:
        path: Where it is saved (JSON: format, source, split, files).
        source: The base URL the files came from.
        split: ``train`` or ``test``.
        files: Relative path -> ``{"sha256": ..., "size": ...}``.
    """

    path: Path
    source: str
    split: str
    files: dict[str, dict] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: Path, source: str, split: str) -> DownloadManifest:
        """The manifest at ``path`` (empty when absent or unreadable: files are then checked
        by decoding and hashed again)."""
        manifest = cls(Path(path), source, split)
        if manifest.path.is_file():
            try:
                data = json.loads(manifest.path.read_text())
                manifest.files = dict(data["files"])
            except (ValueError, KeyError, TypeError) as error:
                logger.warning("%s is unreadable (%s); files will be checked again", path, error)
        return manifest

    def record(self, root: Path, relative: str) -> None:
        """Hash a file now in the dataset root and remember it."""
        path = Path(root) / relative
        entry = {"sha256": sha256_file(path), "size": path.stat().st_size}
        with self._lock:
            self.files[relative] = entry

    def status(self, root: Path, relative: str) -> str:
        """``ok``, ``missing`` (no file), ``mismatch`` (size or SHA-256 differ) or
        ``unknown`` (a file the manifest has no entry for)."""
        path = Path(root) / relative
        if not path.is_file():
            return MISSING
        with self._lock:
            entry = self.files.get(relative)
        if entry is None:
            return UNKNOWN
        if path.stat().st_size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
            return MISMATCH
        return OK

    def save(self) -> None:
        """Write the manifest atomically (sorted, so that runs diff cleanly)."""
        with self._lock:
            files = dict(sorted(self.files.items()))
        data = {
            "format": MANIFEST_FORMAT,
            "source": self.source,
            "split": self.split,
            "n_files": len(files),
            "files": files,
        }
        atomic_write_json(self.path, data)

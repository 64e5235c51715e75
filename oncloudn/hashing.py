"""SHA-256 of files: folds files (provenance), zips (run records), chips and model folders."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable


def _update(digest, path: str | os.PathLike) -> None:
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    _update(digest, path)
    return digest.hexdigest()


def sha256_named_files(files: Iterable[tuple[str, str | os.PathLike]]) -> str:
    """SHA-256 hex digest over ``(name, path)`` pairs: each name, a NUL byte, the file's bytes.

    The order of ``files`` is the caller's (sort it for an order-free digest).
    """
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(f"{name}\0".encode())
        _update(digest, path)
    return digest.hexdigest()

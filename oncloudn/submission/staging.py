"""One staging place per output folder, whose stale leftovers the next run removes.

``pack`` stages its model copy and the zip being written in
``<zip folder>/.oncloudn-staging/<prefix>-<pid>-<random>/`` (the same file system as the
zip, so the finished zip is renamed into place atomically). Each staging folder has a lock
file beside it (``<folder>.lock``), created and locked before the folder and held while
the run lives. On entry, :func:`staging_folder` removes every staging folder whose lock is
free (its process is gone, ``kill -9`` included) and every folder without a lock file; on
exit it removes its own folder, then the staging place when empty. Nothing is left beside
the zip.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from oncloudn.submission.locks import try_lock, write_owner

logger = logging.getLogger(__name__)

STAGING_DIR = ".oncloudn-staging"
LOCK_SUFFIX = ".lock"


def clean_stale(root: Path) -> list[Path]:
    """Remove the staging folders under ``root`` that no live process holds; return them."""
    removed = []
    if not root.is_dir():
        return removed
    for lock_path in sorted(root.glob(f"*{LOCK_SUFFIX}")):
        fd = try_lock(lock_path)
        if fd is None:
            continue  # a live run
        try:
            folder = lock_path.with_suffix("")
            shutil.rmtree(folder, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
            removed.append(folder)
        finally:
            os.close(fd)
    locks = {p.with_suffix("") for p in root.glob(f"*{LOCK_SUFFIX}")}
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry not in locks:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    if removed:
        logger.info("removed %d stale staging folder(s) in %s", len(removed), root)
    return removed


@contextmanager
def staging_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """Yield a fresh, locked staging folder under ``parent/.oncloudn-staging``.

    Stale staging folders there are removed first; this one is removed on exit (an
    exception included), and the staging place too when nothing else is in it.
    """
    root = parent / STAGING_DIR
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root)
    while True:
        folder = root / f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}"
        lock_path = folder.with_name(folder.name + LOCK_SUFFIX)
        if not lock_path.exists():
            break
    fd = try_lock(lock_path)
    if fd is None:  # pragma: no cover - a random name taken between two calls
        raise RuntimeError(f"staging lock {lock_path} is held by another process")
    try:
        write_owner(fd)
        folder.mkdir()
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock_path.unlink(missing_ok=True)
        os.close(fd)
        with contextlib.suppress(OSError):  # another run's staging is still there
            root.rmdir()

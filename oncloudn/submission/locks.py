"""Advisory file locks (``flock``) that say whether a run, or what it left running, is alive.

A lock is held by an open file description, and released by the kernel when the last
descriptor on it closes, however its processes end (``kill -9`` included). ``run-local``
hands its descriptor down to ``main.py``'s process tree, so a folder stays locked while any
process of the run lives; ``pack`` locks its staging folder so that a later ``pack`` can tell
a live staging folder from a stale one. Where ``fcntl`` does not exist (Windows) locks always
succeed, with a warning. :func:`processes_with_env` finds processes a killed run left
behind that did not inherit the lock.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from oncloudn.errors import SubmissionError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


def try_lock(path: Path) -> int | None:
    """Open (creating) ``path`` and lock it exclusively without waiting.

    Returns:
        The descriptor holding the lock (inheritable, so child processes can keep it), or
        ``None`` when another open file holds it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:
        logger.warning("no fcntl here: %s is not locked", path)
        os.set_inheritable(fd, True)
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.set_inheritable(fd, True)
    return fd


def write_owner(fd: int) -> None:
    """Record this process's id in a held lock file (for the message of a refused lock)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def read_owner(path: Path) -> str:
    """The process id written in a lock file, or ``"unknown"``."""
    try:
        return path.read_text(encoding="ascii").strip() or "unknown"
    except (OSError, UnicodeDecodeError):
        return "unknown"


def lock_folder(folder: Path, name: str, what: str) -> int:
    """Lock ``folder/name`` for this run; return its descriptor.

    Raises:
        SubmissionError: Another run (or processes it left running) holds the lock.
    """
    path = folder / name
    fd = try_lock(path)
    if fd is None:
        raise SubmissionError(
            f"{folder} is in use by another {what} (pid {read_owner(path)}) or by processes it "
            "left running; wait for it to end or choose another folder"
        )
    write_owner(fd)
    return fd


def processes_with_env(name: str, value: str) -> list[int]:
    """Ids of the processes whose environment holds ``name=value`` (Linux ``/proc``; else []).

    run-local gives every run's processes ``ONCLOUDN_PREDICTIONS_DIR=<OUT>/predictions``; a
    worker that a killed run's ``main.py`` started (and that did not inherit the lock) still
    carries it. Processes of other users are not readable and not listed.
    """
    proc = Path("/proc")
    if not sys.platform.startswith("linux") or not proc.is_dir():
        return []
    marker = f"{name}={value}".encode()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)

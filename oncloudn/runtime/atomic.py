"""Atomic file writes (runtime-safe): write a hidden temporary sibling, then rename it.

Every file the toolkit writes (manifests, predictions, checkpoints, zips, configs, reports)
goes through :func:`atomic_path`, so a crash or an error never leaves a partial file at the
destination, nor a stray temporary file beside it. The temporary file lives in the target's
own folder (same filesystem, so ``os.replace`` is atomic), is hidden (its name starts with
``.``, so chip and prediction listings skip it) and keeps the target's extension last
(``.<stem>.<random>.tmp<ext>``), so writers that look at the extension (``np.savez``,
rasterio, zipfile) behave as they would on the final name.
"""

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, Optional, Union

PathLike = Union[str, os.PathLike]


def _create_temp(directory: str, name: str) -> str:
    """Create an empty hidden sibling of ``name`` in ``directory`` and return its path.

    Created exclusively (mode ``"x"``: a unique name, never someone else's file) with the
    permissions a plain ``open(path, "w")`` gives (unlike ``tempfile.mkstemp``'s 0600).
    """
    stem, ext = os.path.splitext(name)
    while True:
        temp = os.path.join(directory, f".{stem}.{secrets.token_hex(4)}.tmp{ext}")
        try:
            with open(temp, "xb"):
                return temp
        except FileExistsError:
            continue


@contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary path to write ``path`` through; rename it into place on success.

    The parent folder is created. If the block raises (anything, ``KeyboardInterrupt``
    included), the temporary file is removed, the destination is left as it was, and the
    exception propagates.

    Example::

        with atomic_path("out/weights.pt") as temp:
            torch.save(state, temp)
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temp = _create_temp(directory, os.path.basename(path))
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as temp, open(temp, "wb") as stream:
        stream.write(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temp, open(temp, "w", encoding=encoding) as stream:
        stream.write(text)


def atomic_write_json(
    path: PathLike, data: Any, default: Optional[Callable[[Any], Any]] = None
) -> None:
    """Write ``data`` as indented JSON (2 spaces, trailing newline) to ``path`` atomically.

    ``default`` is passed to :func:`json.dumps` (e.g. ``str`` for paths and timestamps).
    """
    atomic_write_text(path, json.dumps(data, indent=2, default=default) + "\n")

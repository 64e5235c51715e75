"""Unzipping a submission that may be hostile: checked names, no links, capped sizes.

:func:`check_archive` reads only the zip's directory (what ``run-local`` checks before it
creates anything); :func:`extract_archive` then writes the entries itself, counting the bytes
it actually writes, because the sizes a zip declares can lie. It stops (and the caller
removes what was written) when the total passes ``max_bytes``, when an entry's written bytes
pass ``max_ratio`` times its compressed size, or when the zip has more than ``max_entries``
entries. Symbolic-link entries, absolute paths, ``..`` and backslashes are refused.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oncloudn.errors import SubmissionError

CHUNK = 1 << 20
RATIO_FLOOR_BYTES = 1 << 20  # small entries may compress well (JSON, source files)


@dataclass(frozen=True)
class ZipLimits:
    """Caps on extracting a submission zip.

    Attributes:
        max_bytes: Total bytes written (default 8 GiB: weights of the largest ensembles).
        max_entries: Entries in the zip.
        max_ratio: Written bytes per compressed byte of one entry (checked past 1 MiB);
            weights compress about 1.1:1, a zip bomb 1000:1.
    """

    max_bytes: int = 8 << 30
    max_entries: int = 20_000
    max_ratio: float = 100.0


def _name_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return f"{name!r} is a symbolic link (links are refused: they can point anywhere)"
    path = PurePosixPath(name)
    if name.startswith("/") or "\\" in name or ".." in path.parts or ":" in path.parts[0]:
        return f"{name!r} is an unsafe path (absolute, '..', a drive or a backslash)"
    return None


def check_archive(archive: zipfile.ZipFile, limits: ZipLimits) -> list[str]:
    """Problems visible in the zip's directory: links, unsafe names, too many entries.

    Declared sizes over ``max_bytes`` are refused here too (cheaply); sizes under it are
    still counted while extracting.
    """
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        return [f"{len(infos):,} entries, more than the limit of {limits.max_entries:,}"]
    problems = [problem for info in infos if (problem := _name_problem(info))]
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_bytes:
        problems.append(
            f"it declares {declared:,} bytes unzipped, more than the limit of "
            f"{limits.max_bytes:,} bytes"
        )
    return problems


def _copy_entry(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, limits: ZipLimits
) -> int:
    """Write one entry; return its bytes. Raises SubmissionError past a limit."""
    written = 0
    ratio_cap = max(RATIO_FLOOR_BYTES, limits.max_ratio * max(info.compress_size, 1))
    with archive.open(info) as source, open(target, "xb") as sink:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > budget:
                raise SubmissionError(
                    f"unzipping passed the limit of {limits.max_bytes:,} bytes at {info.filename!r}"
                    " (a zip bomb, or raise --max-unzipped-gib)"
                )
            if written > ratio_cap:
                raise SubmissionError(
                    f"{info.filename!r} expands more than {limits.max_ratio:g} times its "
                    f"compressed size ({info.compress_size:,} bytes): a zip bomb"
                )
            sink.write(chunk)
    return written


def extract_archive(archive: zipfile.ZipFile, destination: Path, limits: ZipLimits) -> int:
    """Extract every entry under ``destination``; return the bytes written.

    Raises:
        SubmissionError: A link, an unsafe path or a limit passed (the partial extraction is
            left for the caller to remove).
    """
    root = destination.resolve()
    total = 0
    for info in archive.infolist():
        problem = _name_problem(info)
        if problem:
            raise SubmissionError(problem)
        target = root / info.filename
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.realpath(target).startswith(str(root) + os.sep):
            raise SubmissionError(f"{info.filename!r} would be written outside {root}")
        try:
            total += _copy_entry(archive, info, target, limits.max_bytes - total, limits)
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise SubmissionError(f"{info.filename!r} is corrupt in the zip ({error})") from None
        except FileExistsError:
            raise SubmissionError(f"{info.filename!r} appears twice in the zip") from None
    return total

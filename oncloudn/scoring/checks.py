"""The competition runtime's rules for a predictions folder, checked before scoring.

Rules (see RUNTIME.md): exactly one ``<chip_id>.tif`` per expected chip and no other entry at
all (no extra chips, temporary or hidden files, sub-folders); each file at most 524,288 bytes,
a single-band 512 x 512 image with values only 0 and 1, read identically by PIL (the
runtime's checks) and by tifffile (the runtime's scorer).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from tqdm import tqdm

from oncloudn.errors import SubmissionError

logger = logging.getLogger(__name__)

CHIP_SIZE = 512
MAX_FILE_SIZE = 512 * 512 * 2
"""Bytes; the runtime's limit (2x one uint8 byte per pixel)."""
ALLOWED_VALUES = (0, 1)
MAX_LISTED = 10
"""Offenders named in a :class:`SubmissionError`; the rest are counted."""

FIX_HINT = (
    "Fix: write exactly one single-band 512 x 512 uint8 mask of 0/1 per chip, uncompressed "
    "(e.g. with oncloudn.runtime.chipio.write_mask), named <chip_id>.tif, and leave nothing "
    "else in the folder (keep run.json, logs and temporary files beside it)."
)

# Problem kinds, in the order they are summarised.
MISSING = "missing"
EXTRA = "extra"
INVALID = "invalid"


@dataclass(frozen=True)
class Problem:
    """One broken rule.

    Attributes:
        kind: ``missing`` (an expected chip has no file), ``extra`` (an entry that must not be
            there) or ``invalid`` (a chip's file breaks a content rule).
        name: The file name (``<chip_id>.tif`` or the offending entry).
        message: What is wrong, naming the file.
    """

    kind: str
    name: str
    message: str

    def __str__(self) -> str:
        return self.message


def read_with_pil(path: str | Path) -> np.ndarray:
    """Read an image the way the runtime's checks do (PIL), as ``[H, W]`` or ``[H, W, C]``.

    A multi-page TIFF comes back as ``[pages, H, W]`` so it can never pass for one band.
    """
    with Image.open(path) as image:
        pages = getattr(image, "n_frames", 1)
        arrays = []
        for page in range(pages):
            image.seek(page)
            arrays.append(np.array(image))
    return arrays[0] if pages == 1 else np.stack(arrays)


def read_with_tifffile(path: str | Path) -> np.ndarray:
    """Read an image the way the runtime's scorer does (``tifffile.imread``)."""
    return tifffile.imread(path)


def _content_problems(path: Path) -> list[str]:
    """What is wrong with one prediction file's size or content (empty when it is fine)."""
    problems = []
    size = path.stat().st_size
    if size > MAX_FILE_SIZE:
        problems.append(
            f"{size:,} bytes, over the limit of {MAX_FILE_SIZE:,} (write uint8, uncompressed "
            "or with a lossless compression)"
        )
    arrays = {}
    for reader_name, reader in (("PIL", read_with_pil), ("tifffile", read_with_tifffile)):
        try:
            arrays[reader_name] = reader(path)
        except Exception as error:  # any decoder failure means the runtime cannot read it
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            problems.append(f"cannot be read by {reader_name} ({first_line})")
    if not arrays:
        return problems
    array = arrays.get("tifffile", arrays.get("PIL"))
    if array.shape != (CHIP_SIZE, CHIP_SIZE):
        problems.append(
            f"shape {array.shape}, expected a single band of {CHIP_SIZE} x {CHIP_SIZE}"
            + (" (multi-band image)" if array.ndim > 2 else "")
        )
    else:
        bad = array[(array != 0) & (array != 1)]
        if bad.size:
            values = ", ".join(str(v) for v in np.unique(bad)[:5].tolist())
            problems.append(f"values other than 0 and 1 ({bad.size:,} pixels, e.g. {values})")
    if len(arrays) == 2:
        pil, tiff = arrays["PIL"], arrays["tifffile"]
        if pil.shape != tiff.shape or not np.array_equal(pil, tiff):
            problems.append(
                f"PIL and tifffile read different arrays (shapes {pil.shape} and {tiff.shape}); "
                "write a plain uncompressed TIFF"
            )
    return problems


def find_problems(
    pred_dir: str | Path, expected_chip_ids: Iterable[str], progress: bool = True
) -> list[Problem]:
    """Check a predictions folder against every runtime rule.

    Args:
        pred_dir: The predictions folder.
        expected_chip_ids: The chips that must have a prediction (e.g. the label files' stems,
            or the non-hidden folders of ``test_features``).
        progress: Show a tqdm bar while reading the files.

    Returns:
        Every problem found, missing chips first, then extra entries, then invalid files.
    """
    pred_dir = Path(pred_dir)
    expected = sorted(set(expected_chip_ids))
    if not pred_dir.is_dir():
        return [Problem(MISSING, str(pred_dir), f"predictions folder {pred_dir} does not exist")]
    entries = sorted(os.listdir(pred_dir))
    expected_names = {f"{chip_id}.tif" for chip_id in expected}
    present = [name for name in entries if name in expected_names and (pred_dir / name).is_file()]
    problems = [
        Problem(MISSING, name, f"{name}: missing (expected one prediction per chip)")
        for name in sorted(expected_names - set(present))
    ]
    for name in entries:
        if name in present:
            continue
        problems.append(Problem(EXTRA, name, f"{name}: {_describe_extra(pred_dir / name, name)}"))
    for name in tqdm(present, desc="checking predictions", unit="file", disable=not progress):
        problems.extend(
            Problem(INVALID, name, f"{name}: {message}")
            for message in _content_problems(pred_dir / name)
        )
    counts = Counter(problem.kind for problem in problems)
    logger.info(
        "checked %d prediction file(s) in %s for %d chip(s): %d missing, %d extra, %d invalid",
        len(present),
        pred_dir,
        len(expected),
        counts[MISSING],
        counts[EXTRA],
        counts[INVALID],
    )
    return problems


def _describe_extra(path: Path, name: str) -> str:
    if path.is_dir():
        return "unexpected sub-folder (the folder must hold only <chip_id>.tif files)"
    if name.startswith("."):
        return "hidden file (the folder must hold only <chip_id>.tif files)"
    if name.endswith(".tif"):
        return "prediction for a chip that is not expected (extra chip)"
    return "unexpected file (temporary or other files are not allowed)"


def check_prediction_folder(
    pred_dir: str | Path, expected_chip_ids: Iterable[str], progress: bool = True
) -> list[str]:
    """The runtime rules a predictions folder breaks, one message per problem.

    Args:
        pred_dir: The predictions folder.
        expected_chip_ids: The chips that must have a prediction.
        progress: Show a tqdm bar while reading the files.

    Returns:
        Problem messages naming the file at fault; empty when the folder is valid.
    """
    return [problem.message for problem in find_problems(pred_dir, expected_chip_ids, progress)]


def assert_valid_predictions(
    pred_dir: str | Path, expected_chip_ids: Iterable[str], progress: bool = True
) -> None:
    """Raise when a predictions folder breaks a runtime rule.

    Raises:
        SubmissionError: Listing the first offenders, the count of each kind of problem, and
            how to fix them.
    """
    problems = find_problems(pred_dir, expected_chip_ids, progress)
    if problems:
        raise SubmissionError(format_problems(pred_dir, problems))


def format_problems(pred_dir: str | Path, problems: list[Problem]) -> str:
    """One message summarising ``problems``: counts, the first offenders and the fix."""
    counts = Counter(problem.kind for problem in problems)
    summary = ", ".join(
        f"{counts[kind]} {kind}" for kind in (MISSING, EXTRA, INVALID) if counts[kind]
    )
    lines = [f"predictions in {pred_dir} break the runtime's rules ({summary}):"]
    lines += [f"  - {problem.message}" for problem in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more problem(s)")
    lines.append(FIX_HINT)
    return "\n".join(lines)

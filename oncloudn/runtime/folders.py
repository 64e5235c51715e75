"""One-line descriptions of a path of the wrong kind (runtime-safe).

A folder argument that does not exist, or is a file, is described as such, with what is
expected, instead of being reported as "missing".
"""

import os
from typing import Optional

from .manifest import MANIFEST_NAME


def folder_problem(path: "str | os.PathLike", what: str, expected: str) -> Optional[str]:
    """Why ``path`` is not a usable folder, in one line, or ``None`` when it is a folder.

    Args:
        path: The path given.
        what: What it should be, e.g. ``"predictions folder"``.
        expected: What a right one holds, e.g. ``"expected <chip_id>.tif files"``.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return None
    if not os.path.exists(path):
        return f"{what} {path} does not exist; {expected}"
    if os.path.basename(path) == MANIFEST_NAME:
        return (
            f"{what} {path} is a model's {MANIFEST_NAME}, not a folder; pass the folder that "
            f"holds it ({os.path.dirname(path) or '.'})"
        )
    return f"{what} {path} is a file, not a folder; {expected}"

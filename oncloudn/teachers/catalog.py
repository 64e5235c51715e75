"""The teachers ``oncloudn teachers add NAME OUT`` can write as model folders."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oncloudn.errors import ConfigError
from oncloudn.teachers.ukis import add_ukis_teacher

TEACHERS: dict[str, Callable[..., Path]] = {
    "ukis-csmask": add_ukis_teacher,
}
"""Teacher name -> ``add(out, **options) -> folder``."""


def add_teacher(name: str, out: str | os.PathLike, **options: Any) -> Path:
    """Write the model folder of teacher ``name`` into ``out``.

    Args:
        name: A key of :data:`TEACHERS`.
        out: The folder to create.
        **options: The teacher's own options (e.g. ``product="l2a"`` for ukis-csmask).

    Raises:
        ConfigError: An unknown teacher (the message lists the known ones) or bad options.
    """
    if name not in TEACHERS:
        raise ConfigError(f"unknown teacher {name!r}; choose one of: {', '.join(sorted(TEACHERS))}")
    return TEACHERS[name](out, **options)

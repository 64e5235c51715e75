"""Data commands: ``sample-data`` and ``check-data`` (registered here as they land)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data sub-commands."""

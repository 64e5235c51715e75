"""Shared fixtures: tiny seeded datasets in the On Cloud N layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from toydata import write_toy_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def toy_root(tmp_path: Path) -> Path:
    """Six 512 x 512 labelled train chips from three locations."""
    chip_ids = ["0000", "abcd", "efgh", "ijkl", "mnop", "qrst"]
    locations = ["Loc A", "Loc A", "Loc B", "Loc B", "Loc C", "Loc C"]
    return write_toy_dataset(tmp_path / "data", chip_ids, locations)


@pytest.fixture
def shared_data() -> Path:
    """The real chips in ../shared/data; skips the test when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it exists only on dev machines)")
    return SHARED_DATA

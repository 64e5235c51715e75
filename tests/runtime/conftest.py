"""Fixtures for the runtime tests: tiny model folders and a toy features folder with faults."""

from __future__ import annotations

from pathlib import Path

import pytest
from rt_folders import make_threshold_folder, make_unet_folder


@pytest.fixture
def unet_folder(tmp_path: Path) -> Path:
    """A tiny UNet model folder."""
    return make_unet_folder(tmp_path / "unet")


@pytest.fixture
def threshold_folder(tmp_path: Path) -> Path:
    """A threshold-rule model folder."""
    return make_threshold_folder(tmp_path / "threshold")


@pytest.fixture
def faulty_features(toy_root: Path) -> Path:
    """The toy train features with one chip lacking B08 and one with a corrupt B03."""
    features = toy_root / "train_features"
    (features / "abcd" / "B08.tif").unlink()
    (features / "efgh" / "B03.tif").write_bytes(b"this is not a TIFF" * 100)
    return features

"""Helpers for the runtime tests: tiny seeded model folders (imported by the tests)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from oncloudn.runtime.manifest import Manifest, write_manifest
from oncloudn.runtime.models import threshold_manifest
from oncloudn.runtime.unet import UNet

TINY_WIDTHS = [4, 8]
REPO = Path(__file__).resolve().parents[2]


def make_vendored_code(zip_root: Path) -> Path:
    """main.py + oncloudn/__init__.py + oncloudn/runtime/ in ``zip_root``, as in the zip."""
    (zip_root / "oncloudn").mkdir(parents=True)
    shutil.copy(REPO / "submission" / "main.py", zip_root / "main.py")
    shutil.copy(REPO / "oncloudn" / "__init__.py", zip_root / "oncloudn" / "__init__.py")
    shutil.copytree(
        REPO / "oncloudn" / "runtime",
        zip_root / "oncloudn" / "runtime",
        ignore=shutil.ignore_patterns("__pycache__", "*.toml"),
    )
    return zip_root


def make_unet_folder(folder: Path, seed: int = 0, **fields) -> Path:
    """A model folder holding a tiny seeded UNet (2 levels) with a sigmoid head."""
    torch.manual_seed(seed)
    network = UNet(4, 1, widths=TINY_WIDTHS)
    values = {
        "name": f"tiny-unet-{seed}",
        "architecture": {"name": "unet", "args": {"widths": TINY_WIDTHS}},
        "normalization": {"name": "reflectance", "params": {}},
    }
    values.update(fields)
    write_manifest(str(folder), Manifest(**values))
    torch.save(network.state_dict(), os.path.join(folder, "weights.pt"))
    return folder


def make_threshold_folder(folder: Path) -> Path:
    """A model folder for the classic threshold rule (no weights)."""
    write_manifest(str(folder), threshold_manifest())
    return folder

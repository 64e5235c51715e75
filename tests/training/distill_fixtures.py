"""Shared fixtures of the distillation tests: sample roots, teachers, tiny configs."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from oncloudn.config import DistillConfig, ModelConfig, load_config
from oncloudn.models.folder import save_model_folder
from oncloudn.models.registry import create_model

REPO = Path(__file__).resolve().parents[2]
BANDS = ["B02", "B03", "B04", "B08"]


def unlabelled_copy(root: Path, out: Path) -> Path:
    """A copy of a dataset root's training chips and metadata without its labels."""
    shutil.copytree(root / "train_features", out / "train_features")
    shutil.copy(root / "train_metadata.csv", out / "train_metadata.csv")
    return out


def network_teacher(folder: Path, tta: list[str] | None = None, seed: int = 0) -> Path:
    """A random plain U-Net (widths [4, 8]) model folder, licence in its provenance."""
    torch.manual_seed(seed)
    model = create_model(ModelConfig(network="unet", args={"widths": [4, 8]}), BANDS)
    with torch.no_grad():
        model.network.head.bias.fill_(0.0)
        model.network.head.weight.mul_(200.0)  # teacher logits of order 1, not ~0
    manifest = model.manifest
    manifest.name = "tiny-teacher"
    manifest.provenance = {"licence": "Apache-2.0 (test teacher)"}
    if tta is not None:
        manifest.tta = list(tta)
    return save_model_folder(folder, manifest, state_dict=model.network.state_dict())


def distill_config(root: Path, teacher: Path, out: Path, *overrides: str) -> DistillConfig:
    """The shipped sample config, shrunk: 2 steps of 2 chips, 32 px crops, tiny student."""
    base = [
        f"data.root={root}",
        f"teacher.path={teacher}",
        f"trainer.out_dir={out}",
        "trainer.epochs=1",
        "trainer.max_steps_per_epoch=2",
        "trainer.batch_size=2",
        "model.args={widths: [4, 8, 16]}",
        "augmentation.steps=[{name: RandomCrop, params: {height: 32, width: 32}}, {name: D4}]",
    ]
    return load_config(
        REPO / "configs" / "distill_sample.yaml", base + list(overrides), DistillConfig
    )

"""The ``nnunet`` model kind: an nnU-Net v2 trained model as a teacher, without nnunetv2.

A model folder of kind ``nnunet`` points (``options.trained_model``) at an nnU-Net v2
trained-model folder, copied into it by :func:`import_nnunet_model` (``oncloudn nnunet
import``) or referenced by its path. Loading needs torch and dynamic-network-architectures;
predicting follows nnU-Net's own pipeline (``nnunet_inference.py``) and returns 2-class
logits: cloud = the cloud label's logit, clear = logsumexp of the others; outside nnU-Net's
crop box (an all-zero nodata border) the chip is clear with probability 1, as nnU-Net says.

Options (manifest ``options``):

- ``trained_model``: the trained-model folder, relative to the model folder or absolute;
- ``folds``: fold names whose checkpoints are averaged (``["0", "1", ...]`` or ``["all"]``);
- ``checkpoint``: the file in each ``fold_X`` (default ``checkpoint_final.pth``);
- ``tile_step``: sliding-window step as a fraction of the patch (nnU-Net's default 0.5);
- ``mirroring``: mirror TTA over the axes the checkpoint allows (nnU-Net's default on);
- ``cloud_label``: the label name in ``dataset.json`` that means cloud (default ``cloud``).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncloudn.errors import ConfigError
from oncloudn.hashing import sha256_file
from oncloudn.models.folder import save_model_folder
from oncloudn.models.nnunet_inference import fold_logits, preprocess
from oncloudn.models.nnunet_network import (
    CHECKPOINT_NAME,
    TrainedModel,
    build_network,
    read_trained_model,
    segmentation_labels,
)
from oncloudn.runtime import loader
from oncloudn.runtime.bands import BANDS
from oncloudn.runtime.manifest import MANIFEST_NAME, Manifest, path_inside
from oncloudn.runtime.models import PredictableModel

logger = logging.getLogger(__name__)

KIND = "nnunet"
OPTIONS = ("trained_model", "folds", "checkpoint", "tile_step", "mirroring", "cloud_label")
REASON = (
    "needs dynamic-network-architectures and nnU-Net v2 checkpoints; the competition runtime "
    "has nnunet 1.7 only (distil the teacher into a runtime model to submit it)"
)
COPY_DIR = "nnunet"
OUTSIDE_LOGIT = -1.0e4
"""Cloud logit outside nnU-Net's crop box (clear logit 0): probability exactly 0."""


class NnunetModel(PredictableModel):
    """An nnU-Net v2 2d model (one network, one state dict per fold) of the model protocol.

    Args:
        trained: The trained-model folder, read.
        manifest: Its ``kind: nnunet`` manifest.
        tile_step: Sliding-window step (fraction of the patch size).
        mirroring: Mirror TTA over the checkpoint's allowed axes.
        cloud_label: The label name meaning cloud.

    Raises:
        ConfigError: An unknown cloud label, a bad step, or weights that do not fit the
            network the plans describe.
    """

    def __init__(
        self,
        trained: TrainedModel,
        manifest: Manifest,
        tile_step: float = 0.5,
        mirroring: bool = True,
        cloud_label: str = "cloud",
    ):
        super().__init__(manifest.bands, manifest)
        labels = segmentation_labels(trained.dataset_json)
        if cloud_label not in labels:
            raise ConfigError(
                f"{trained.folder}: dataset.json has no label {cloud_label!r}; its labels are "
                f"{', '.join(labels)} (set options.cloud_label)"
            )
        if not 0 < float(tile_step) <= 1:
            raise ConfigError(f"tile_step must be in (0, 1], got {tile_step}")
        self.network = build_network(trained).eval()
        self.states = [dict(state) for state in trained.states]
        for fold, state in zip(trained.folds, self.states, strict=True):
            try:
                self.network.load_state_dict(state)
            except RuntimeError as error:
                raise ConfigError(
                    f"{trained.folder}: fold {fold} weights do not fit the network the plans "
                    f"describe ({str(error).splitlines()[0]})"
                ) from None
        self.patch = [int(size) for size in trained.config["patch_size"]]
        self.use_mask_for_norm = list(trained.config["use_mask_for_norm"])
        self.mirror_axes = trained.mirror_axes if mirroring else None
        self.tile_step = float(tile_step)
        self.cloud_channel = labels[cloud_label]
        self.device = torch.device("cpu")

    def to(self, device: Any) -> NnunetModel:
        """Move the network and every fold's weights to ``device``; returns the model."""
        self.device = torch.device(device)
        self.network.to(self.device)
        self.states = [{k: v.to(self.device) for k, v in s.items()} for s in self.states]
        return self

    def eval(self) -> NnunetModel:
        """The network is always in inference mode; returns the model."""
        self.network.eval()
        return self

    def image_logits(self, image: np.ndarray) -> torch.Tensor:
        """2-class logits ``[2, H, W]`` (float32, CPU) of one raw image ``[C, H, W]``."""
        data, box = preprocess(image, self.use_mask_for_norm)
        tensor = torch.from_numpy(data).to(self.device)
        with torch.no_grad():
            logits = fold_logits(
                self.network, self.states, tensor, self.patch, self.tile_step, self.mirror_axes
            )[:, 0].float()
        others = [index for index in range(logits.shape[0]) if index != self.cloud_channel]
        out = torch.zeros((2, *image.shape[1:]), dtype=torch.float32)
        out[1] = OUTSIDE_LOGIT
        out[(0, *box)] = torch.logsumexp(logits[others], dim=0)
        out[(1, *box)] = logits[self.cloud_channel]
        return out

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        """2-class logits ``[N, 2, H, W]`` (clear, cloud) of raw DN ``[N, C, H, W]``."""
        if raw.dim() != 4 or raw.shape[1] != len(self.bands):
            raise ValueError(
                f"expected raw DN [N, {len(self.bands)}, H, W] in band order "
                f"{', '.join(self.bands)}, got shape {tuple(raw.shape)}"
            )
        images = raw.detach().cpu().numpy()
        return torch.stack([self.image_logits(image) for image in images]).to(raw.device)


def _options(manifest: Manifest) -> dict[str, Any]:
    options = {
        "checkpoint": CHECKPOINT_NAME,
        "tile_step": 0.5,
        "mirroring": True,
        "cloud_label": "cloud",
        **manifest.options,
    }
    for key in ("trained_model", "folds"):
        if key not in options:
            raise ConfigError(
                f"a 'nnunet' manifest needs options.{key} (see oncloudn nnunet import)"
            )
    return options


def load_nnunet(folder: str, manifest: Manifest, device: str) -> NnunetModel:
    """``kind: nnunet``: the trained-model folder named in the manifest's options."""
    options = _options(manifest)
    path = Path(folder) / options["trained_model"]  # an absolute path stays absolute
    if not Path(options["trained_model"]).is_absolute():  # a copy must stay inside
        try:
            path_inside(folder, options["trained_model"], "options.trained_model")
        except ValueError as error:
            raise ConfigError(str(error)) from None
    folds = [str(fold) for fold in options["folds"]]
    trained = read_trained_model(path, folds, options["checkpoint"])
    model = NnunetModel(
        trained, manifest, options["tile_step"], bool(options["mirroring"]), options["cloud_label"]
    )
    return model.to(device)


def register() -> None:
    """Register the ``nnunet`` kind (idempotent)."""

    if KIND not in loader.KINDS:
        loader.register_kind(KIND, load_nnunet, runtime=False, reason=REASON, options=OPTIONS)


def available_folds(folder: str | os.PathLike, checkpoint: str = CHECKPOINT_NAME) -> list[str]:
    """Fold names of ``fold_X`` sub-folders holding ``checkpoint`` (numbers first)."""
    names = [p.parent.name[5:] for p in Path(folder).glob(f"fold_*/{checkpoint}")]
    return sorted(names, key=lambda name: (not name.isdigit(), name.zfill(8)))


def _copy_trained(source: Path, target: Path, folds: Sequence[str], checkpoint: str) -> None:
    target.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy2(source / name, target / name)
    for fold in folds:
        (target / f"fold_{fold}").mkdir()
        shutil.copy2(source / f"fold_{fold}" / checkpoint, target / f"fold_{fold}" / checkpoint)


def _bands(trained: TrainedModel) -> list[str]:
    names = [
        trained.dataset_json["channel_names"][key]
        for key in sorted(trained.dataset_json["channel_names"], key=int)
    ]
    unknown = [name for name in names if name not in BANDS]
    if unknown:
        raise ConfigError(
            f"{trained.folder}/dataset.json: channel names {names} are not band names "
            f"({', '.join(BANDS)}); export the dataset with oncloudn nnunet export"
        )
    return names


def import_nnunet_model(
    trained_dir: str | os.PathLike,
    out: str | os.PathLike,
    folds: Sequence[str] | None = None,
    checkpoint: str = CHECKPOINT_NAME,
    copy: bool = True,
    tile_step: float = 0.5,
    mirroring: bool = True,
    name: str | None = None,
    force: bool = False,
) -> Path:
    """Write a ``kind: nnunet`` model folder for an nnU-Net v2 trained-model folder.

    The model is loaded once (allowlist, weights, labels checked) before anything is written.

    Args:
        trained_dir: ``nnUNet_results/DatasetNNN_Name/<trainer>__<plans>__2d``.
        out: The model folder to write.
        folds: Folds to average (default: every ``fold_X`` holding ``checkpoint``).
        checkpoint: Checkpoint file name in each fold folder.
        copy: Copy plans, dataset.json and the checkpoints into ``out/nnunet`` (else the
            manifest references ``trained_dir`` by its absolute path).
        tile_step: Sliding-window step (fraction of the patch size).
        mirroring: Mirror TTA as nnU-Net does.
        name: The manifest's name (default: the dataset and configuration).
        force: Replace a non-empty ``out``.

    Raises:
        ConfigError: No folds, an unsupported or refused model, or a non-empty ``out``.
    """
    source, out = Path(trained_dir).resolve(), Path(out)
    folds = [str(fold) for fold in folds] if folds else available_folds(source, checkpoint)
    if not folds:
        raise ConfigError(f"{source}: no fold_X/{checkpoint} found; train a fold first")
    is_model = (out / MANIFEST_NAME).is_file()
    if out.exists() and any(out.iterdir()) and not (force and is_model):
        raise ConfigError(
            f"{out} is not empty; choose a new folder" + (" or pass --force" if is_model else "")
        )
    trained = read_trained_model(source, folds, checkpoint)
    options = {
        "trained_model": COPY_DIR if copy else str(source),
        "folds": folds,
        "checkpoint": checkpoint,
        "tile_step": float(tile_step),
        "mirroring": bool(mirroring),
        "cloud_label": "cloud",
    }
    manifest = Manifest(
        name=name or f"{trained.plans.get('dataset_name', 'nnunet')}-{trained.configuration}",
        kind=KIND,
        architecture={"name": trained.config["architecture"]["network_class_name"], "args": {}},
        bands=_bands(trained),
        normalization={"name": "nnunet", "params": {}},
        head={"activation": "softmax", "channels": 2, "positive_index": 1},
        weights=None,
        options=options,
        provenance={
            "nnunet_trained_model": str(source),
            "checkpoint_sha256": {
                fold: sha256_file(source / f"fold_{fold}" / checkpoint) for fold in folds
            },
        },
    )
    NnunetModel(trained, manifest, tile_step, mirroring)  # refuse before writing
    if out.exists() and force:
        shutil.rmtree(out)
    if copy:
        _copy_trained(source, out / COPY_DIR, folds, checkpoint)
    save_model_folder(out, manifest)
    logger.info("imported nnU-Net model %s (folds %s) as %s", source, ",".join(folds), out)
    return out

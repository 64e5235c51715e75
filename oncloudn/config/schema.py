"""Typed training configs: the dataclass tree a YAML config file mirrors.

A config file mirrors the tree below (every key optional; defaults fill the rest)::

    data:      {root, split, bands, folds_file, n_folds, folds_seed, fold, exclude_lists,
                normalization: {name, params}, num_workers, max_chips}
    model:     {network, args, encoder_weights, head}
    augmentation: {steps: [{name, params}, ...]}
    loss:      {terms: [{name, weight, params}, ...]}
    optimizer: {name, lr, weight_decay, momentum}
    schedule:  {name, warmup_steps, min_lr_ratio}
    trainer:   {epochs, batch_size, grad_accum, amp, channels_last, seed,
                early_stopping_patience, val_every, out_dir, device, log_tensorboard,
                max_steps_per_epoch, val_batch_size, threshold, cpu_threads}

Later configs (e.g. distillation) extend :class:`TrainConfig` with new sections; the loader
(``loader.py``) works for any dataclass tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oncloudn.runtime.bands import BANDS


@dataclass
class NormalizationConfig:
    """Input normalization applied inside the model (see ``oncloudn.runtime.normalize``).

    Attributes:
        name: ``raw``, ``reflectance``, ``zscore_chip`` or ``dataset``.
        params: Parameters of the normalization (e.g. ``mean``/``std`` for ``dataset``).
    """

    name: str = "reflectance"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Which chips to train on and how to read them.

    Attributes:
        root: Dataset root (``ROOT/{split}_features/...``).
        split: Split to train on (``train``).
        bands: Input bands in channel order.
        folds_file: Folds CSV (``chip_id,location,fold``); created there when absent.
            ``None``: ``<out_dir>/folds.csv``.
        n_folds: Number of location-grouped folds when the folds file is created.
        folds_seed: Seed of the fold assignment when the folds file is created.
        fold: Held-out fold to train; ``None`` trains every fold in turn.
        exclude_lists: Text files with one chip id per line (``#`` comments and blank lines
            allowed); those chips are neither trained on nor scored.
        normalization: Input normalization recorded in the manifest.
        num_workers: DataLoader workers.
        max_chips: Use only this many chips (seeded sample) for smoke runs; ``None``: all.
    """

    root: str = "data"
    split: str = "train"
    bands: list[str] = field(default_factory=lambda: list(BANDS))
    folds_file: str | None = None
    n_folds: int = 5
    folds_seed: int = 0
    fold: int | None = 0
    exclude_lists: list[str] = field(default_factory=list)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    num_workers: int = 0
    max_chips: int | None = None


@dataclass
class ModelConfig:
    """The network to train.

    Attributes:
        network: ``smp`` (segmentation-models-pytorch) or ``unet`` (runtime plain U-Net).
        args: Network arguments, e.g. ``{arch: Unet, encoder_name: resnet34}`` for smp.
        encoder_weights: ``None`` (random init) or a local file holding the encoder's
            state dict. Nothing is ever downloaded.
        head: ``sigmoid`` (one cloud logit) or ``softmax`` (two logits: clear, cloud).
    """

    network: str = "smp"
    args: dict[str, Any] = field(
        default_factory=lambda: {"arch": "Unet", "encoder_name": "resnet34"}
    )
    encoder_weights: str | None = None
    head: str = "sigmoid"


@dataclass
class AugmentStep:
    """One augmentation step.

    Attributes:
        name: An albumentations class name (geometric: ``D4``, ``HorizontalFlip``,
            ``RandomRotate90``, ``RandomResizedCrop``, ``RandomCrop``...) or one of the
            photometric steps of ``oncloudn.training.augment`` (``brightness_contrast``,
            ``gamma``, ``gauss_noise``), which act on reflectance without clipping.
        params: Keyword arguments of the step (e.g. ``{p: 0.5}``).
    """

    name: str = "HorizontalFlip"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    """Training augmentation: steps applied in order to image, mask and valid mask.

    Attributes:
        steps: The declared steps; empty means no augmentation.
    """

    steps: list[AugmentStep] = field(default_factory=list)


@dataclass
class LossTerm:
    """One weighted loss term.

    Attributes:
        name: ``bce``, ``dice``, ``jaccard``, ``lovasz`` or ``focal``.
        weight: Weight in the sum.
        params: Extra keyword arguments of the smp loss.
    """

    name: str = "bce"
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """The training loss: a weighted sum of terms.

    Attributes:
        terms: The loss terms.
    """

    terms: list[LossTerm] = field(default_factory=lambda: [LossTerm()])


@dataclass
class OptimizerConfig:
    """Optimizer.

    Attributes:
        name: ``adam``, ``adamw`` or ``sgd``.
        lr: Peak learning rate.
        weight_decay: Weight decay.
        momentum: SGD momentum (ignored by Adam/AdamW).
    """

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, stepped once per optimizer step.

    Attributes:
        name: ``cosine`` (linear warmup, cosine decay), ``onecycle`` or ``constant``.
        warmup_steps: Optimizer steps of linear warmup (``cosine``/``constant``); for
            ``onecycle`` the warm-up fraction is ``warmup_steps / total_steps``
            (0 means 30 %).
        min_lr_ratio: Final learning rate as a fraction of ``lr`` (``cosine``).
    """

    name: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0


@dataclass
class TrainerConfig:
    """The training loop.

    Attributes:
        epochs: Number of epochs.
        batch_size: Chips per step (per process under DDP).
        grad_accum: Batches accumulated per optimizer step.
        amp: Mixed precision (CUDA only; ignored on CPU).
        channels_last: Channels-last memory format (CUDA only).
        seed: Seed of model init, sampling and augmentation.
        early_stopping_patience: Stop after this many validations without improvement;
            ``None`` disables early stopping.
        val_every: Validate every this many epochs (and always after the last).
        out_dir: Run folder (``fold_<k>/`` model folders, ``oof/``, ``folds.csv``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        log_tensorboard: Write TensorBoard logs when ``tensorboard`` is installed.
        max_steps_per_epoch: Cap on batches per epoch for smoke runs; ``None``: all.
        val_batch_size: Chips per validation batch.
        threshold: Cloud probability threshold for the validation metric and manifest.
        cpu_threads: torch CPU threads (``torch.set_num_threads``); ``None`` keeps torch's
            default. On a busy or small CPU, 1 per process is often fastest.
    """

    epochs: int = 10
    batch_size: int = 8
    grad_accum: int = 1
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    early_stopping_patience: int | None = None
    val_every: int = 1
    out_dir: str = "runs/train"
    device: str = "auto"
    log_tensorboard: bool = False
    max_steps_per_epoch: int | None = None
    val_batch_size: int = 4
    threshold: float = 0.5
    cpu_threads: int | None = None


@dataclass
class TrainConfig:
    """The whole training config."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

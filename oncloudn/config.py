"""Typed training configs: a dataclass tree loaded from YAML with ``--set key=value`` overrides.

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

The loader is generic (:func:`config_from_dict` works for any dataclass tree), so later
configs (e.g. distillation) extend :class:`TrainConfig` with new sections.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from oncloudn.errors import ConfigError
from oncloudn.runtime.atomic import atomic_write_text
from oncloudn.runtime.bands import BANDS

T = TypeVar("T")


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


# --------------------------------------------------------------------------- loading


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, or raise ConfigError naming ``where``."""
    if tp is Any:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is list:
        (item_type,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "1e-3" as a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; valid keys of {cls.__name__}: {', '.join(valid)}"
        )
    kwargs = {
        key: _convert(value, hints[key], f"{where}.{key}" if where else key)
        for key, value in data.items()
    }
    return cls(**kwargs)


def config_from_dict(
    data: dict[str, Any] | None, cls: type[T] = TrainConfig, source: str = "config"
) -> T:
    """Build a config dataclass tree from a plain dict.

    Args:
        data: Nested mapping (e.g. parsed YAML); missing keys take defaults.
        cls: The root dataclass.
        source: Name used in error messages (e.g. the file path).

    Raises:
        ConfigError: Unknown keys (the message lists the valid ones) or wrongly typed values.
    """
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return _build(cls, data, "")
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass tree as a plain nested dict (YAML/JSON-ready)."""
    return dataclasses.asdict(config)


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``key.sub=value`` override in place (value parsed with ``yaml.safe_load``).

    List items are addressed by index, e.g. ``loss.terms.0.weight=0.5``.

    Raises:
        ConfigError: A malformed override or a path through a non-container.
    """
    if "=" not in override:
        raise ConfigError(
            f"override {override!r} must look like key.sub=value, e.g. trainer.epochs=2"
        )
    key, raw_value = override.split("=", 1)
    parts = [part for part in key.strip().split(".") if part]
    if not parts:
        raise ConfigError(f"override {override!r} has an empty key")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({error})") from None
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, override)
            continue
        if not isinstance(node, dict):
            raise ConfigError(
                f"override {override!r}: {'.'.join(parts[: depth + 1])} is not a section"
            )
        node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        index = _list_index(node, last, override)
        node[index] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {override!r}: {'.'.join(parts[:-1])} is not a section")


def _list_index(node: list, part: str, override: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(
            f"override {override!r}: {part!r} is not an index of a {len(node)}-item list"
        )
    return int(part)


def _list_item(node: list, part: str, override: str) -> Any:
    return node[_list_index(node, part, override)]


def load_config(
    path: str | Path | None,
    overrides: list[str] | None = None,
    cls: type[T] = TrainConfig,
) -> T:
    """Load a YAML config and apply ``--set`` overrides.

    Args:
        path: YAML file; ``None`` starts from the defaults.
        overrides: ``key.sub=value`` strings applied in order.
        cls: The root dataclass (``TrainConfig`` or an extension of it).

    Raises:
        FileNotFoundError: The file does not exist.
        ConfigError: Invalid YAML, unknown keys or wrongly typed values.
    """
    source = str(path) if path is not None else "defaults"
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist (see configs/*.yaml)")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    if overrides:
        # Start from the full default tree so overrides can address list items and sections.
        base = config_to_dict(config_from_dict(data, cls, source))
        for override in overrides:
            apply_override(base, override)
        data = base
        source = f"{source} with --set {' '.join(overrides)}"
    return config_from_dict(data, cls, source)


def save_config(config: Any, path: str | Path) -> Path:
    """Write a config as YAML atomically (temp file + ``os.replace``) and return the path."""
    path = Path(path)
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)
    atomic_write_text(path, text)
    return path

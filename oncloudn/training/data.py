"""Training data: folds file, exclude lists, per-fold chip sets and seeded loaders."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from oncloudn.config import TrainConfig
from oncloudn.data.chips import DatasetPaths, check_root, list_chips
from oncloudn.data.dataset import CloudDataset
from oncloudn.data.folds import assign_folds, folds_for_chips, load_folds, save_folds
from oncloudn.errors import DataError
from oncloudn.training.augment import CONTINUOUS, Augmenter
from oncloudn.training.checkpoint import derive_seed
from oncloudn.training.distributed import DistContext

logger = logging.getLogger(__name__)

FOLDS_NAME = "folds.csv"


def read_exclude_lists(files: list[str]) -> set[str]:
    """Chip ids listed in exclude files (one id per line; blank lines and ``#`` comments ok).

    A line may also be a CSV row: its first field is taken as the chip id, so the top rows
    of a ``flag-labels`` CSV (first column ``chip_id``) work as an exclude list.

    Raises:
        FileNotFoundError: A listed file does not exist.
    """
    excluded: set[str] = set()
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"exclude list {path} (data.exclude_lists) does not exist")
        for line in path.read_text(encoding="utf-8").splitlines():
            chip_id = line.split("#", 1)[0].strip()
            if chip_id:
                excluded.add(chip_id.split(",")[0].strip())
    return excluded


def folds_path_of(config: TrainConfig) -> Path:
    """The folds file of a run: ``data.folds_file`` or ``<out_dir>/folds.csv``."""
    if config.data.folds_file:
        return Path(config.data.folds_file)
    return Path(config.trainer.out_dir) / FOLDS_NAME


class ChipSource(Protocol):
    """Where a run's chips come from (default :class:`RootChips`: one labelled root).

    A distillation run reads several roots, labelled or not, through its own source; the
    trainer only lists, reads and describes chips through this protocol.
    """

    def chips(self) -> pd.DataFrame:
        """The run's chips: a frame with ``chip_id`` and ``location``, one row per chip."""
        ...

    def dataset(self, chip_ids: list[str], training: bool) -> CloudDataset:
        """Samples of ``chip_ids`` (``image``, ``mask``, ``valid``, ``chip_id``, and
        ``load_arrays(index)``) for training (``True``) or validation / OOF (``False``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """The training data as recorded in a model folder's provenance."""
        ...

    def metric_notes(self, chip_ids: list[str]) -> dict[str, Any]:
        """Extra entries of ``metrics.json`` about validating on ``chip_ids``."""
        ...


class RootChips:
    """The default chip source: the labelled chips of ``data.root`` / ``data.split``."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.paths = DatasetPaths(config.data.root, config.data.split)

    def chips(self) -> pd.DataFrame:
        """Every chip folder of the split with its location.

        Raises:
            DataError: The root is unusable, or chips lack labels (checked before training
                starts, not mid-epoch).
        """
        check_root(self.paths)
        chips = list_chips(self.paths)
        excluded = read_exclude_lists(self.config.data.exclude_lists)
        check_labelled(self.paths, [c for c in chips["chip_id"] if c not in excluded])
        return chips

    def dataset(self, chip_ids: list[str], training: bool) -> CloudDataset:
        """A labelled raw-DN dataset over ``chip_ids`` (the same for training and validation)."""
        return make_dataset(self.config, chip_ids)

    def describe(self) -> dict[str, Any]:
        """``{"root", "split"}`` of the dataset."""
        return {"root": str(self.paths.root.resolve()), "split": self.paths.split}

    def metric_notes(self, chip_ids: list[str]) -> dict[str, Any]:
        """Nothing: validation is always against the labels."""
        return {}


def check_labelled(paths: DatasetPaths, chip_ids: list[str]) -> None:
    """Refuse to train on chips without labels, before anything runs.

    Raises:
        DataError: The labels folder is absent or some chips have no label file.
    """
    if not paths.labels_dir.is_dir():
        raise DataError(
            f"{paths.root} split {paths.split} is unlabelled ({paths.labels_dir} does not "
            f"exist): `train` needs labels; distil from a teacher instead (`oncloudn distill`, "
            "which trains on unlabelled chips) or point data.root at a labelled root"
        )
    missing = [c for c in chip_ids if not paths.label_path(c).is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(chip_ids)} chips of {paths.root} split {paths.split} have "
            f"no label in {paths.labels_dir}, e.g. {missing[:5]}; add their labels or list "
            "them in data.exclude_lists"
        )


def prepare_folds(
    config: TrainConfig, ctx: DistContext | None = None, source: ChipSource | None = None
) -> tuple[pd.DataFrame, Path]:
    """Load the run's folds file, creating it (location-grouped) when absent.

    Only rank 0 writes it; other ranks wait for it (see ``barrier`` in the trainer).

    Args:
        config: The run's config (folds file, number of folds, seed).
        ctx: The DDP context.
        source: The run's chips (default: :class:`RootChips` of the config).

    Returns:
        ``(folds frame restricted to the source's chips, folds path)``.

    Raises:
        DataError: The folds file misses chips of the source.
    """
    source = source or RootChips(config)
    chips = source.chips()
    path = folds_path_of(config)
    if not path.exists() and (ctx is None or ctx.is_main):
        frame = assign_folds(chips, config.data.n_folds, config.data.folds_seed)
        save_folds(frame, path)
        logger.info("wrote %d-fold location-grouped folds file %s", config.data.n_folds, path)
    if ctx is not None and ctx.enabled:
        dist.barrier()
    fix = "delete it to regenerate, or point data.folds_file elsewhere"
    frame = folds_for_chips(load_folds(path), chips, path, "the run", fix)
    return frame, path


@dataclass
class FoldChips:
    """Chips of one fold.

    Attributes:
        train: Chips to train on (other folds, minus excluded chips).
        val: Held-out chips scored by the validation metric (minus excluded chips).
        oof: Every held-out chip (excluded ones too), predicted into the OOF file.
        excluded: Number of chips dropped by the exclude lists.
    """

    train: list[str]
    val: list[str]
    oof: list[str]
    excluded: int


def fold_chips(config: TrainConfig, folds: pd.DataFrame, fold: int) -> FoldChips:
    """Split a folds frame into a fold's train, validation and OOF chips.

    ``data.max_chips`` keeps a seeded sample of the chips first (smoke runs).

    Raises:
        DataError: An out-of-range fold or an empty train/validation set.
    """
    available = sorted(int(value) for value in folds["fold"].unique())
    if fold not in available:
        raise DataError(f"fold {fold} does not exist in the folds file; folds: {available}")
    chip_ids = sorted(folds["chip_id"])
    if config.data.max_chips is not None and config.data.max_chips < len(chip_ids):
        rng = np.random.default_rng(config.data.folds_seed)
        chip_ids = sorted(rng.choice(chip_ids, config.data.max_chips, replace=False).tolist())
    keep = folds[folds["chip_id"].isin(set(chip_ids))]
    excluded = read_exclude_lists(config.data.exclude_lists)
    held_out = sorted(keep.loc[keep["fold"] == fold, "chip_id"])
    train = sorted(c for c in keep.loc[keep["fold"] != fold, "chip_id"] if c not in excluded)
    val = [c for c in held_out if c not in excluded]
    if not train or not val:
        raise DataError(
            f"fold {fold}: {len(train)} training and {len(val)} validation chips after "
            "max_chips and exclude lists; use more chips or fewer folds"
        )
    n_excluded = len([c for c in keep["chip_id"] if c in excluded])
    return FoldChips(train=train, val=val, oof=held_out, excluded=n_excluded)


class TargetSource(Protocol):
    """Extra per-pixel training targets by chip id (e.g. cached teacher logit differences).

    Attributes:
        kinds: ``{key: "mask" | "continuous"}`` of the arrays it adds to each sample; the
            augmenter moves them with the image (nearest / bilinear) and the batches carry
            them to the objective under the same keys.

    It is called in DataLoader workers: keep it picklable and on the CPU (numpy arrays).
    """

    kinds: Mapping[str, str]

    def __call__(self, chip_id: str) -> dict[str, np.ndarray]:
        """The chip's extra targets, ``[H, W]`` or ``[C, H, W]`` arrays keyed as ``kinds``."""
        ...


class TrainingDataset(Dataset):
    """Training samples augmented with a seed derived from ``(seed, epoch, index)``.

    The same epoch and index always give the same sample, whatever the worker count, so a
    resumed run replays its epochs exactly. Call :meth:`set_epoch` before each epoch.

    Args:
        base: The labelled raw-DN dataset.
        augmenter: The augmentation (``None``: none); it must declare ``targets.kinds``.
        seed: The run's seed.
        targets: Extra per-pixel targets added to every sample (``None``: none).
    """

    def __init__(
        self,
        base: CloudDataset,
        augmenter: Augmenter | None,
        seed: int,
        targets: TargetSource | None = None,
    ) -> None:
        self.base = base
        self.augmenter = augmenter
        self.seed = seed
        self.targets = targets
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation to replay."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        chip_id = self.base.chip_ids[index]
        sample = self.base.load_arrays(index)
        kinds = dict(self.targets.kinds) if self.targets is not None else {}
        if self.targets is not None:
            sample.update(self.targets(chip_id))
        if self.augmenter is not None:
            sample = self.augmenter(sample, derive_seed(self.seed, self.epoch, index))
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(sample["image"], dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(sample["mask"], dtype=np.float32)),
            "valid": torch.from_numpy(np.ascontiguousarray(sample["valid"], dtype=bool)),
            "chip_id": chip_id,
        }
        for key, kind in kinds.items():
            dtype = np.float32 if kind == CONTINUOUS else None
            item[key] = torch.from_numpy(np.ascontiguousarray(sample[key], dtype=dtype))
        return item


def make_dataset(config: TrainConfig, chip_ids: list[str]) -> CloudDataset:
    """A labelled raw-DN dataset over ``chip_ids`` of the configured split."""
    paths = DatasetPaths(config.data.root, config.data.split)
    return CloudDataset(paths, chip_ids=chip_ids, bands=config.data.bands, with_labels=True)


def train_loader(
    dataset: TrainingDataset, config: TrainConfig, epoch: int, ctx: DistContext
) -> DataLoader:
    """A shuffled loader for ``epoch``, seeded from ``(seed, epoch)`` (sharded under DDP)."""
    dataset.set_epoch(epoch)
    seed = config.trainer.seed
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch, 1))
    if ctx.enabled:
        sampler = DistributedSampler(
            dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed
        )
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    workers = config.data.num_workers
    return DataLoader(
        dataset,
        batch_size=config.trainer.batch_size,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
        persistent_workers=False,
    )


def eval_loader(dataset: CloudDataset, config: TrainConfig) -> DataLoader:
    """An ordered loader for validation / OOF prediction."""
    return DataLoader(
        dataset,
        batch_size=config.trainer.val_batch_size,
        shuffle=False,
        num_workers=config.data.num_workers,
        pin_memory=torch.cuda.is_available(),
    )

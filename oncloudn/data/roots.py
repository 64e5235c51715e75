"""Several dataset roots as one set of chips: labelled or not, deduplicated, locations held out.

A distillation run reads chips from several roots (e.g. a labelled and an unlabelled one).
:func:`build_catalog` lists every root, then:

- **holds out locations**: every chip id listed under a held-out location in *any* root is
  removed from *every* root (the same chip may sit in two roots, under another location or
  none in the second);
- **deduplicates** chip ids: a chip is read from the first root holding its label, else from
  the first root listing it; its location is the first known one among its copies.

:class:`CatalogDataset` reads the catalog's chips as training or validation samples, with
labels where they exist (``mask`` is :data:`IGNORE_VALUE` everywhere on unlabelled chips).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from oncloudn.data.chips import UNKNOWN_LOCATION, DatasetPaths, list_chips, read_chip
from oncloudn.errors import DataError
from oncloudn.hashing import sha256_named_files
from oncloudn.runtime.bands import BANDS, IGNORE_VALUE

logger = logging.getLogger(__name__)

CATALOG_COLUMNS = ("chip_id", "location", "root", "labelled")


@dataclass(frozen=True)
class RootSpec:
    """One dataset root of a catalog.

    Attributes:
        paths: Its split.
        licence: Its licence and source (recorded in provenance).
    """

    paths: DatasetPaths
    licence: str = ""


@dataclass
class ChipCatalog:
    """Chips of several roots, one row per chip id.

    Attributes:
        roots: The roots, in order of preference.
        frame: ``chip_id, location, root (index into roots), labelled`` of the kept chips,
            sorted by chip id.
        held_out: The same columns for the chips removed by the held-out locations (one row
            per root copy).
        listed: Number of chip folders per root (before holdout and deduplication).
    """

    roots: list[RootSpec]
    frame: pd.DataFrame
    held_out: pd.DataFrame
    listed: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rows = {
            chip_id: (int(root), bool(labelled))
            for chip_id, root, labelled in zip(
                self.frame["chip_id"], self.frame["root"], self.frame["labelled"], strict=True
            )
        }

    def paths_of(self, chip_id: str) -> DatasetPaths:
        """The split a chip is read from.

        Raises:
            DataError: The chip is not in the catalog (e.g. held out).
        """
        if chip_id not in self._rows:
            raise DataError(f"chip {chip_id!r} is not among the run's chips (held out?)")
        return self.roots[self._rows[chip_id][0]].paths

    def labelled(self, chip_id: str) -> bool:
        """Whether the chip is read with a label.

        Raises:
            DataError: The chip is not in the catalog.
        """
        self.paths_of(chip_id)
        return self._rows[chip_id][1]

    def describe(self) -> list[dict]:
        """Per root: path, split, licence, chips listed, chips used, labelled chips used."""
        rows = []
        for index, spec in enumerate(self.roots):
            used = self.frame[self.frame["root"] == index]
            rows.append(
                {
                    "root": str(spec.paths.root.resolve()),
                    "split": spec.paths.split,
                    "licence": spec.licence,
                    "n_listed": self.listed[index] if index < len(self.listed) else None,
                    "n_used": len(used),
                    "n_labelled": int(used["labelled"].sum()),
                }
            )
        return rows


def _root_frame(spec: RootSpec, index: int, use_labels: bool) -> pd.DataFrame:
    chips = list_chips(spec.paths)[["chip_id", "location"]].copy()
    labels = spec.paths.labels_dir
    chips["labelled"] = [
        use_labels and (labels / f"{chip_id}.tif").is_file() for chip_id in chips["chip_id"]
    ]
    chips["root"] = index
    return chips


def build_catalog(
    roots: Sequence[RootSpec], holdout_locations: Sequence[str] = (), use_labels: bool = True
) -> ChipCatalog:
    """List, hold out and deduplicate the chips of several roots (see the module docstring).

    Args:
        roots: The roots, in order of preference.
        holdout_locations: Locations whose chips leave every root.
        use_labels: ``False`` reads every chip without its label.

    Raises:
        DataError: No roots, a held-out location no root lists (the message lists the
            known ones), or no chip left.
    """
    if not roots:
        raise DataError("no dataset roots given")
    frames = [_root_frame(spec, index, use_labels) for index, spec in enumerate(roots)]
    every = pd.concat(frames, ignore_index=True)
    holdout = set(holdout_locations)
    unknown = sorted(holdout - set(every["location"]))
    if unknown:
        raise DataError(
            f"held-out location(s) {unknown} appear in no root; known locations: "
            f"{', '.join(sorted(set(every['location'])))}"
        )
    removed_ids = set(every.loc[every["location"].isin(holdout), "chip_id"])
    removed = every["chip_id"].isin(removed_ids)
    kept = every[~removed]
    if kept.empty:
        raise DataError(
            f"no chips left in {len(roots)} root(s) after holding out {sorted(holdout)}"
        )
    known = kept[kept["location"] != UNKNOWN_LOCATION].drop_duplicates("chip_id")
    location = dict(zip(known["chip_id"], known["location"], strict=True))
    ordered = kept.sort_values(["chip_id", "labelled", "root"], ascending=[True, False, True])
    frame = ordered.drop_duplicates("chip_id").copy()
    frame["location"] = [location.get(c, UNKNOWN_LOCATION) for c in frame["chip_id"]]
    columns = list(CATALOG_COLUMNS)
    return ChipCatalog(
        roots=list(roots),
        frame=frame[columns].reset_index(drop=True),
        held_out=every[removed][columns].sort_values(["chip_id", "root"]).reset_index(drop=True),
        listed=[len(part) for part in frames],
    )


def chip_content_hash(paths: DatasetPaths, chip_id: str, bands: Sequence[str] = BANDS) -> str:
    """SHA-256 of a chip's band files (names and bytes, in ``bands`` order).

    Raises:
        FileNotFoundError: A band file is missing.
    """
    return sha256_named_files((band, paths.chip_dir(chip_id) / f"{band}.tif") for band in bands)


ReferenceFn = Callable[[str], np.ndarray]
"""Chip id -> a 0/1 reference mask ``[H, W]`` for a chip without labels (e.g. a teacher's)."""


class CatalogDataset(Dataset):
    """Samples of a catalog's chips, labelled or not (items as ``CloudDataset``'s).

    Training samples (``training=True``): ``valid`` is false on nodata and ignored-label
    pixels (no loss sees them); an unlabelled chip has ``mask`` = :data:`IGNORE_VALUE`
    everywhere. Validation samples keep the competition metric's view (nodata pixels count,
    with label 0); an unlabelled chip in ``reference_ids`` is scored against
    ``reference(chip_id)`` (nodata set to 0), any other unlabelled chip is not scored.

    Args:
        catalog: The chips.
        chip_ids: Chips to read, in order.
        bands: Band names in channel order.
        training: Training (``True``) or validation samples.
        reference: Reference masks of unlabelled validation chips.
        reference_ids: The unlabelled chips ``reference`` scores.
    """

    def __init__(
        self,
        catalog: ChipCatalog,
        chip_ids: Sequence[str],
        bands: Sequence[str] = BANDS,
        training: bool = True,
        reference: ReferenceFn | None = None,
        reference_ids: frozenset[str] = frozenset(),
    ) -> None:
        self.catalog = catalog
        self.chip_ids = list(chip_ids)
        if not self.chip_ids:
            raise DataError("no chips to read from the catalog")
        self.bands = tuple(bands)
        self.training = training
        self.reference = reference
        self.reference_ids = reference_ids

    def __len__(self) -> int:
        return len(self.chip_ids)

    def load_arrays(self, index: int) -> dict:
        """``{"image", "mask", "valid"}`` numpy arrays of chip ``index``."""
        chip_id = self.chip_ids[index]
        labelled = self.catalog.labelled(chip_id)
        chip = read_chip(self.catalog.paths_of(chip_id), chip_id, self.bands, with_label=labelled)
        data = ~chip.nodata if self.training else np.ones(chip.nodata.shape, bool)
        if labelled:
            ignored = chip.label == IGNORE_VALUE
            mask = ((chip.label != 0) & ~ignored).astype(np.float32)
            valid = ~ignored & data
        elif not self.training and chip_id in self.reference_ids and self.reference:
            mask = np.where(chip.nodata, 0, self.reference(chip_id)).astype(np.float32)
            valid = data
        else:
            mask = np.full(chip.nodata.shape, IGNORE_VALUE, np.float32)
            valid = data
        return {"image": chip.bands.astype(np.float32), "mask": mask, "valid": valid}

    def __getitem__(self, index: int) -> dict:
        sample = self.load_arrays(index)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(sample["image"], np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(sample["mask"], np.float32)),
            "valid": torch.from_numpy(np.ascontiguousarray(sample["valid"], bool)),
            "chip_id": self.chip_ids[index],
        }

"""A torch ``Dataset`` over one split of a dataset root.

Items are dicts (as in torchgeo): ``image`` float32 ``[C, H, W]`` of raw DN (the input
contract: models normalize themselves), ``mask`` float32 ``[H, W]`` (1 = cloud), ``valid``
bool ``[H, W]`` (``False`` where the label holds ``ignore_value``), and ``chip_id``.
Nodata pixels stay valid: the competition metric scores them (their label is 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from oncloudn.data.chips import DatasetPaths, list_chips, read_chip
from oncloudn.errors import DataError
from oncloudn.runtime.bands import BANDS, IGNORE_VALUE
from oncloudn.runtime.normalize import NORMALIZATIONS, normalize


class CloudDataset(Dataset):
    """Chips of one split as training/inference samples.

    Args:
        paths: The split to read.
        chip_ids: Chips to use, in order; default all chip folders of the split.
        bands: Band names, in channel order.
        with_labels: Read labels (``mask`` and ``valid`` are omitted otherwise).
        transform: Called with ``{"image": float32 [C, H, W], "mask": float32 [H, W],
            "valid": bool [H, W]}`` numpy arrays (no mask/valid without labels) before the
            conversion to tensors; returns a dict of the same keys (e.g. augmentation).
        normalization: Name of a ``oncloudn.runtime.normalize`` normalization applied to the
            image after ``transform``; ``None`` keeps raw DN (what models expect).
        normalization_params: Its parameters.
        ignore_value: Label value that marks pixels to ignore (``valid`` False); ``None``
            makes every pixel valid.

    Raises:
        DataError: An unknown normalization name or an empty chip list.
    """

    def __init__(
        self,
        paths: DatasetPaths,
        chip_ids: Sequence[str] | None = None,
        bands: Sequence[str] = BANDS,
        with_labels: bool = True,
        transform: Callable[[dict], dict] | None = None,
        normalization: str | None = None,
        normalization_params: dict | None = None,
        ignore_value: int | None = IGNORE_VALUE,
    ) -> None:
        if normalization is not None and normalization not in NORMALIZATIONS:
            raise DataError(
                f"unknown normalization {normalization!r}; choose one of: "
                f"{', '.join(sorted(NORMALIZATIONS))} (or None for raw DN)"
            )
        self.paths = paths
        self.chip_ids = (
            list(chip_ids) if chip_ids is not None else list(list_chips(paths)["chip_id"])
        )
        if not self.chip_ids:
            raise DataError(f"no chips to read in {paths.features_dir}")
        self.bands = tuple(bands)
        self.with_labels = with_labels
        self.transform = transform
        self.normalization = normalization
        self.normalization_params = dict(normalization_params or {})
        self.ignore_value = ignore_value

    def __len__(self) -> int:
        return len(self.chip_ids)

    def load_arrays(self, index: int) -> dict:
        """The numpy sample of chip ``index`` (before ``transform`` and tensor conversion)."""
        chip_id = self.chip_ids[index]
        chip = read_chip(self.paths, chip_id, self.bands, with_label=self.with_labels)
        sample = {"image": chip.bands.astype(np.float32)}
        if self.with_labels:
            label = chip.label
            ignored = (
                label == self.ignore_value
                if self.ignore_value is not None
                else np.zeros(label.shape, bool)
            )
            sample["mask"] = ((label != 0) & ~ignored).astype(np.float32)
            sample["valid"] = ~ignored
        return sample

    def __getitem__(self, index: int) -> dict:
        sample = self.load_arrays(index)
        if self.transform is not None:
            sample = self.transform(sample)
        image = torch.from_numpy(np.ascontiguousarray(sample["image"], dtype=np.float32))
        if self.normalization is not None:
            image = normalize(image[None], self.normalization, self.normalization_params)[0]
        item = {"image": image, "chip_id": self.chip_ids[index]}
        if self.with_labels:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(sample["mask"], np.float32))
            item["valid"] = torch.from_numpy(np.ascontiguousarray(sample["valid"], bool))
        return item

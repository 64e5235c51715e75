"""Cached probabilities + labels of a sweep's chips, and the masks and counts of settings.

:class:`SweepStore` holds, per chip, the label and nodata mask (read once from the dataset)
and, per source, the memory-mapped planes of :mod:`.cache`. A setting's mask is made by the
runtime's own post-processing (``postprocess_pixels`` -> ``apply_chip_rules`` -> nodata
pixels cleared: the steps of ``oncloudn.runtime.postprocess.postprocess``, split so one pixel
mask serves every chip-level rule), after merging the setting's TTA views as the source's
manifest merges them (mean of probabilities, or of logits for ``tta_merge: logit``).
Intersections and unions per (source, chip, setting) are memoised, so a setting is never
evaluated twice on a chip.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from oncloudn.data.chips import DatasetPaths, list_chips, read_chip
from oncloudn.errors import ConfigError, DataError
from oncloudn.runtime.postprocess import apply_chip_rules, postprocess_pixels
from oncloudn.scoring.metric import chip_counts

from .cache import open_plane, read_cache_info
from .settings import CHIP_PARAMETERS, Setting

logger = logging.getLogger(__name__)

_EPS = 1e-6
_DEFAULT = Setting()


@dataclass
class ChipData:
    """One labelled chip of a sweep.

    Attributes:
        chip_id: The chip's id.
        location: Its metadata location (``unknown`` without one).
        label: Boolean cloud label (any nonzero value, as the competition scores).
        nodata: ``True`` where every band is 0.
        ignore: ``True`` where the label equals the ignore value (``None``: none ignored).
    """

    chip_id: str
    location: str
    label: np.ndarray
    nodata: np.ndarray
    ignore: np.ndarray | None = None


@dataclass
class SourceCache:
    """A source's cache folder, views and TTA merge."""

    name: str
    folder: Path
    views: list[str]
    merge: str = "probability"
    manifest: dict | None = None


@dataclass
class SweepStore:
    """Chips, sources and memoised counts of a sweep (see the module docstring)."""

    chips: dict[str, ChipData]
    sources: dict[str, SourceCache]
    _memo: dict[tuple, tuple[int, int]] = field(default_factory=dict, repr=False)

    @property
    def chip_ids(self) -> list[str]:
        """Every chip, sorted."""
        return sorted(self.chips)

    def locations(self, chip_ids: Sequence[str] | None = None) -> dict[str, str]:
        """``{chip_id: location}``."""
        ids = self.chip_ids if chip_ids is None else chip_ids
        return {c: self.chips[c].location for c in ids}

    def probability(self, source: str, chip_id: str, tta: str) -> np.ndarray:
        """A chip's float32 probability ``[H, W]`` with a TTA variant's views merged.

        Raises:
            ConfigError: The variant needs views the source has not cached.
        """
        cache = self.sources[source]
        views = Setting(tta=tta).views
        missing = [v for v in views if v not in cache.views]
        if missing:
            raise ConfigError(
                f"TTA {tta!r} needs view(s) {missing} that {source} has not cached "
                f"(cached: {', '.join(cache.views)})"
            )
        stack = np.stack([open_plane(cache.folder, v, chip_id) for v in views]).astype(np.float32)
        if cache.merge == "logit" and len(views) > 1:
            p = np.clip(stack, _EPS, 1 - _EPS)
            mean_logit = np.log(p / (1 - p)).mean(axis=0)
            return (1.0 / (1.0 + np.exp(-mean_logit))).astype(np.float32)
        return stack.mean(axis=0)

    def pixel_mask(self, probability: np.ndarray, chip: ChipData, setting: Setting) -> np.ndarray:
        """Steps 1-8 of the runtime's post-processing (before chip rules)."""
        return postprocess_pixels(probability, chip.nodata, setting.threshold, setting.postprocess)

    def mask(self, source: str, chip_id: str, setting: Setting) -> np.ndarray:
        """The uint8 0/1 mask a setting gives on a chip (all steps, nodata cleared)."""
        chip = self.chips[chip_id]
        pixels = self.pixel_mask(self.probability(source, chip_id, setting.tta), chip, setting)
        return _finish(pixels, chip, setting)

    def counts(
        self,
        source: str,
        chip_ids: Sequence[str],
        settings: Sequence[Setting],
        progress: bool = False,
    ) -> np.ndarray:
        """Intersections and unions ``[len(settings), len(chip_ids), 2]`` (int64).

        Chips are visited once each; per chip, the merged probability is made once per TTA
        variant and the pixel mask once per pixel setting, shared by the chip-level rules.
        """
        out = np.zeros((len(settings), len(chip_ids), 2), dtype=np.int64)
        for j, chip_id in enumerate(tqdm(chip_ids, disable=not progress, leave=False)):
            todo = [i for i, s in enumerate(settings) if (source, chip_id, s) not in self._memo]
            if todo:
                self._evaluate_chip(source, chip_id, [settings[i] for i in todo])
            for i, setting in enumerate(settings):
                out[i, j] = self._memo[(source, chip_id, setting)]
        return out

    def _evaluate_chip(self, source: str, chip_id: str, settings: list[Setting]) -> None:
        chip = self.chips[chip_id]
        probabilities: dict[str, np.ndarray] = {}
        pixel_masks: dict[Setting, np.ndarray] = {}
        for setting in settings:
            if setting.tta not in probabilities:
                probabilities[setting.tta] = self.probability(source, chip_id, setting.tta)
            pixel_key = _pixel_key(setting)
            if pixel_key not in pixel_masks:
                probability = probabilities[setting.tta]
                pixel_masks[pixel_key] = self.pixel_mask(probability, chip, setting)
            mask = _finish(pixel_masks[pixel_key], chip, setting)
            if chip.ignore is None:
                counts = chip_counts(mask, chip.label)
            else:
                counts = chip_counts(mask[~chip.ignore], chip.label[~chip.ignore])
            self._memo[(source, chip_id, setting)] = (counts.intersection, counts.union)


def _pixel_key(setting: Setting) -> Setting:
    """The setting with default chip rules: equal for settings sharing one pixel mask."""
    return replace(setting, **{name: getattr(_DEFAULT, name) for name in CHIP_PARAMETERS})


def _finish(pixels: np.ndarray, chip: ChipData, setting: Setting) -> np.ndarray:
    valid = ~chip.nodata
    mask = apply_chip_rules(pixels, valid, setting.chip_rules)
    return (mask & valid).astype(np.uint8)


def load_chips(
    paths: DatasetPaths,
    chip_ids: Sequence[str] | None = None,
    ignore_value: int | None = None,
    progress: bool = True,
) -> dict[str, ChipData]:
    """Labels, nodata masks and locations of a labelled split (every chip by default).

    Raises:
        DataError: The split has no labelled chips, or a requested chip is absent.
    """
    frame = list_chips(paths)
    if chip_ids is not None:
        absent = sorted(set(chip_ids) - set(frame["chip_id"]))
        if absent:
            raise DataError(
                f"chip(s) {absent[:3]} are not in {paths.features_dir}; pass chips of that split"
            )
        frame = frame[frame["chip_id"].isin(set(chip_ids))]
    if frame.empty:
        raise DataError(
            f"{paths.features_dir} has no chips; pass a labelled dataset root (--data ROOT) "
            "with <split>_features/ and <split>_labels/"
        )
    chips = {}
    for row in tqdm(list(frame.itertuples()), desc="labels", disable=not progress, leave=False):
        chip = read_chip(paths, row.chip_id, with_label=True)
        label = chip.label
        ignore = None if ignore_value is None else label == ignore_value
        cloud = (label != 0) if ignore is None else (label != 0) & ~ignore
        chips[row.chip_id] = ChipData(row.chip_id, row.location, cloud, chip.nodata, ignore)
    return chips


def source_cache(folder: Path) -> SourceCache:
    """A :class:`SourceCache` from a cache folder's ``cache.json``."""
    info = read_cache_info(folder)
    manifest = info.get("manifest")
    merge = (manifest or {}).get("tta_merge", "probability")
    return SourceCache(info["name"], Path(folder), list(info["views"]), merge, manifest)

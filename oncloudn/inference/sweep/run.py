"""``sweep_postprocessing``: cache probabilities, tune on some chips, report on others.

For each source (model folder or saved probabilities) and each tune/report split
(:mod:`.splits`): the setting is chosen on the split's tuning chips by coordinate ascent
(:mod:`.search`) and reported on its report chips against the baseline (the model folder's
current manifest setting; threshold 0.5 and nothing else for saved probabilities), with
bootstrap intervals of both scores and a paired interval of their difference, overall and
per location. When the splits' report sets are disjoint (``locations``, ``folds:K``), their
held-out results are also pooled over every chip ("cross-fitted": each chip scored with a
setting chosen without it). The *final* setting, the one ``write_tuned_model`` stores, is tuned
on the union of the splits' tuning chips.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oncloudn.data.chips import DatasetPaths
from oncloudn.errors import ConfigError
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.tta import TTA_PRESETS, resolve_views
from oncloudn.scoring.metric import bootstrap_ci
from oncloudn.scoring.paired_bootstrap import paired_difference

from .cache import build_cache, make_sources, source_views
from .search import parameter_curves, pooled, tune_setting
from .settings import Setting, build_space, setting_from_manifest
from .splits import Split, make_splits
from .store import SweepStore, load_chips, source_cache

logger = logging.getLogger(__name__)


@dataclass
class Scored:
    """A pooled Jaccard with its bootstrap interval."""

    jaccard: float
    low: float
    high: float

    def text(self) -> str:
        """``0.8123 [0.79, 0.83]``."""
        return f"{self.jaccard:.4f} [{self.low:.4f}, {self.high:.4f}]"


@dataclass
class SplitResult:
    """One source on one split: chosen setting, held-out scores, per location, curves."""

    source: str
    split: Split
    baseline: Setting
    tuned: Setting
    tune_baseline: float
    tune_tuned: float
    report_baseline: Scored
    report_tuned: Scored
    difference: dict[str, float]
    per_location: list[dict[str, Any]]
    curves: list[dict[str, Any]]
    trace: list[dict[str, Any]]

    def row(self) -> dict[str, Any]:
        """One line of the results table."""
        return {
            "source": self.source,
            "split": self.split.name,
            "n_tune": len(self.split.tune),
            "n_report": len(self.split.report),
            "in_sample": self.split.in_sample,
            "tuned_setting": self.tuned.describe(self.baseline),
            "tune_J_baseline": self.tune_baseline,
            "tune_J_tuned": self.tune_tuned,
            "report_J_baseline": self.report_baseline.jaccard,
            "report_J_baseline_ci": [self.report_baseline.low, self.report_baseline.high],
            "report_J_tuned": self.report_tuned.jaccard,
            "report_J_tuned_ci": [self.report_tuned.low, self.report_tuned.high],
            "report_gain": self.difference["difference"],
            "report_gain_ci": [self.difference["low"], self.difference["high"]],
            "share_resamples_better": self.difference["share_better"],
        }


@dataclass
class SweepResult:
    """Everything a sweep found (see the module docstring); ``store`` keeps the cache open."""

    store: SweepStore
    paths: DatasetPaths
    spaces: dict[str, dict[str, tuple[Any, ...]]]
    splits: list[SplitResult]
    baselines: dict[str, Setting]
    final: dict[str, Setting]
    cross_fitted: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per source and split."""
        return pd.DataFrame([s.row() for s in self.splits])

    def per_location(self) -> pd.DataFrame:
        """Baseline and tuned Jaccard per location of each split's report chips."""
        return pd.DataFrame([r for s in self.splits for r in s.per_location])

    def curves(self) -> pd.DataFrame:
        """Jaccard against each parameter, on tuning and report chips, per source and split."""
        return pd.DataFrame([c for s in self.splits for c in s.curves])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (no arrays)."""
        return {
            "dataset": str(self.paths.root),
            "split_of_dataset": self.paths.split,
            "sources": self.sources,
            "spaces": {
                name: {k: list(v) for k, v in space.items()} for name, space in self.spaces.items()
            },
            "baselines": {k: v.to_dict() for k, v in self.baselines.items()},
            "final_settings": {k: v.to_dict() for k, v in self.final.items()},
            "results": [
                {
                    **s.row(),
                    "tuned": s.tuned.to_dict(),
                    "trace": s.trace,
                    "per_location": s.per_location,
                }
                for s in self.splits
            ],
            "cross_fitted": self.cross_fitted,
        }

    def markdown(self) -> str:
        """The results table as Markdown text (scores with 95 % intervals)."""
        lines = [
            "| source | split | tune / report chips | setting chosen on tune chips | "
            "report J baseline | report J tuned | gain [95% CI] |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in self.splits:
            d = s.difference
            lines.append(
                f"| {s.source} | {s.split.name} | {len(s.split.tune)} / {len(s.split.report)} | "
                f"{s.tuned.describe(s.baseline)} | {s.report_baseline.text()} | "
                f"{s.report_tuned.text()} | {d['difference']:+.4f} [{d['low']:+.4f}, "
                f"{d['high']:+.4f}] |"
            )
        for c in self.cross_fitted:
            lines.append(
                f"| {c['source']} | cross-fitted (all report sets) | - / {c['n_chips']} | "
                f"(per split) | {c['baseline']:.4f} [{c['baseline_ci'][0]:.4f}, "
                f"{c['baseline_ci'][1]:.4f}] | {c['tuned']:.4f} [{c['tuned_ci'][0]:.4f}, "
                f"{c['tuned_ci'][1]:.4f}] | {c['gain']:+.4f} [{c['gain_ci'][0]:+.4f}, "
                f"{c['gain_ci'][1]:+.4f}] |"
            )
        return "\n".join(lines)


def tta_name(views: Sequence[str]) -> str:
    """A preset's name for a view list when one matches, else the views joined by commas."""
    views = list(views)
    for name, preset in TTA_PRESETS.items():
        if list(preset) == views:
            return name
    return ",".join(views)


def _scored(counts: np.ndarray, n_boot: int, seed: int) -> Scored:
    low, high = bootstrap_ci(counts[:, 0], counts[:, 1], n_boot=n_boot, seed=seed)
    return Scored(float(pooled(counts)), low, high)


def _difference(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    d = paired_difference(a, b, n_boot=n_boot, seed=seed)
    return {
        "difference": d.difference,
        "low": d.low,
        "high": d.high,
        "share_better": d.share_better,
    }


def _baseline(cache) -> Setting:
    if cache.manifest is None:
        return Setting(tta="none")
    manifest = Manifest.from_dict(cache.manifest)
    name = tta_name(resolve_views(manifest.tta))
    if not set(resolve_views(name.split(","))) <= set(cache.views):
        name = "none"
    return setting_from_manifest(manifest, tta=name)


def sweep_postprocessing(
    sources: Sequence[str | os.PathLike],
    data_root: str | os.PathLike,
    split: str = "train",
    tune: str = "locations",
    cache_dir: str | os.PathLike | None = None,
    views: str | Sequence[str] | None = None,
    quick: bool = False,
    overrides: Mapping[str, Sequence[Any]] | None = None,
    rounds: int = 2,
    min_gain: float = 0.0,
    n_boot: int = 1000,
    seed: int = 0,
    chip_ids: Sequence[str] | None = None,
    max_chips: int | None = None,
    ignore_value: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    threads: int | None = None,
) -> SweepResult:
    """Sweep post-processing settings of one or more sources on a labelled dataset.

    Args:
        sources: Model folders, OOF ``.npz`` files/folders, or probability folders.
        data_root: A labelled dataset root (``<split>_features``, ``<split>_labels``,
            ``<split>_metadata.csv`` with locations).
        split: ``train`` or ``test``.
        tune: Split rule (``location:A``, ``locations``, ``folds:K``, ``all``; see
            :mod:`.splits`).
        cache_dir: Where probabilities are cached (``None``: ``.oncloudn-sweep-cache`` in
            the working directory).
        views: TTA views cached for model folders (default ``d4``).
        quick: Use the smaller parameter space.
        overrides: Replace the values of some parameters (see ``parse_overrides``).
        rounds: Coordinate-ascent rounds.
        min_gain: A change must beat the current tuning score by more than this.
        n_boot: Bootstrap resamples of every interval (0: none).
        seed: Seed of the bootstrap and of ``folds:K``.
        chip_ids: Only these chips (default: every chip of the split).
        max_chips: At most this many chips (the first, sorted by id), after ``chip_ids``.
        ignore_value: Label value left out of the score (e.g. 255; default none, as the
            competition).
        device: Torch device for model folders.
        progress: Progress bars.
        threads: CPU threads of torch while caching model folders (``None``: unchanged).

    Raises:
        ConfigError: Bad rule, parameter values or sources.
        DataError: Unusable dataset or probabilities.
        FileNotFoundError: A missing source or dataset.
    """
    if not sources:
        raise ConfigError("pass at least one source: a model folder or saved probabilities")
    if rounds < 1 or n_boot < 0:
        raise ConfigError(f"--rounds must be >= 1 and --n-boot >= 0 (got {rounds}, {n_boot})")
    paths = DatasetPaths(Path(data_root), split)
    if not paths.labels_dir.is_dir():
        raise FileNotFoundError(
            f"{paths.labels_dir} does not exist: the sweep needs labels; pass a labelled "
            "dataset root with --data"
        )
    chips = load_chips(paths, chip_ids, ignore_value, progress)
    if max_chips is not None:
        chips = {c: chips[c] for c in sorted(chips)[: max(1, max_chips)]}
    ids = sorted(chips)
    cache_root = Path(cache_dir) if cache_dir is not None else Path(".oncloudn-sweep-cache")
    found = make_sources(list(sources))
    spaces = {
        s.name: build_space(quick, overrides, source_views(s, views), strict=s.kind == "model")
        for s in found
    }
    splits = make_splits(tune, {c: chips[c].location for c in ids}, seed)
    caches = {
        source.name: source_cache(
            build_cache(source, paths, ids, cache_root, views, device, progress, threads)
        )
        for source in found
    }
    store = SweepStore(chips=chips, sources=caches)
    result = SweepResult(
        store, paths, spaces, [], {}, {}, sources={s.name: str(s.path) for s in found}
    )
    for name, cache in caches.items():
        _sweep_source(
            result, name, _baseline(cache), splits, rounds, min_gain, n_boot, seed, progress
        )
    return result


def _sweep_source(result, name, base, splits, rounds, min_gain, n_boot, seed, progress) -> None:
    """Every split of one source, its final setting and its cross-fitted summary."""
    store, space = result.store, result.spaces[name]
    result.baselines[name] = base
    mine = [
        _run_split(store, name, sp, space, base, rounds, min_gain, n_boot, seed, progress)
        for sp in splits
    ]
    result.splits.extend(mine)
    tune_ids = sorted({c for sp in splits for c in sp.tune})
    result.final[name] = tune_setting(store, name, tune_ids, space, base, rounds, min_gain).best
    cross = _cross_fitted(store, name, mine, base, n_boot, seed)
    if cross:
        result.cross_fitted.append(cross)


def _run_split(store, name, sp, space, base, rounds, min_gain, n_boot, seed, progress):
    tuned = tune_setting(store, name, sp.tune, space, base, rounds, min_gain, progress)
    report = list(sp.report)
    counts = store.counts(name, report, [base, tuned.best])
    per_location = []
    locations = store.locations(report)
    for location in sorted(set(locations.values())):
        index = [i for i, c in enumerate(report) if locations[c] == location]
        a, b = counts[0, index], counts[1, index]
        diff = _difference(a, b, n_boot, seed)
        per_location.append(
            {
                "source": name,
                "split": sp.name,
                "location": location,
                "n_chips": len(index),
                "J_baseline": float(pooled(a)),
                "J_tuned": float(pooled(b)),
                "gain": diff["difference"],
                "gain_ci": [diff["low"], diff["high"]],
            }
        )
    curves = []
    for which, chip_ids in (("tune", sp.tune), ("report", sp.report)):
        for row in parameter_curves(store, name, chip_ids, space, tuned.best):
            curves.append({"source": name, "split": sp.name, "chips": which, **row})
    return SplitResult(
        source=name,
        split=sp,
        baseline=base,
        tuned=tuned.best,
        tune_baseline=tuned.base_jaccard,
        tune_tuned=tuned.jaccard,
        report_baseline=_scored(counts[0], n_boot, seed),
        report_tuned=_scored(counts[1], n_boot, seed),
        difference=_difference(counts[0], counts[1], n_boot, seed),
        per_location=per_location,
        curves=curves,
        trace=tuned.trace,
    )


def _cross_fitted(store, name, splits: list[SplitResult], base, n_boot, seed):
    if len(splits) < 2 or any(s.split.in_sample for s in splits):
        return None
    reported = [c for s in splits for c in s.split.report]
    if len(reported) != len(set(reported)):
        return None
    a_rows, b_rows = [], []
    for s in splits:
        counts = store.counts(name, list(s.split.report), [base, s.tuned])
        a_rows.append(counts[0])
        b_rows.append(counts[1])
    a, b = np.concatenate(a_rows), np.concatenate(b_rows)
    sa, sb = _scored(a, n_boot, seed), _scored(b, n_boot, seed)
    diff = _difference(a, b, n_boot, seed)
    return {
        "source": name,
        "n_chips": len(reported),
        "baseline": sa.jaccard,
        "baseline_ci": [sa.low, sa.high],
        "tuned": sb.jaccard,
        "tuned_ci": [sb.low, sb.high],
        "gain": diff["difference"],
        "gain_ci": [diff["low"], diff["high"]],
    }

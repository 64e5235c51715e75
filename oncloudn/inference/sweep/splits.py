"""Tune/report splits: settings are chosen on some chips and reported on others, never both.

Split rules (``--tune``):

- ``location:A[,B...]``: tune on the chips of locations A, B..., report on every other chip.
- ``locations``: one split per location: tune on all other locations, report on it (with two
  locations: tune on A report on B, and the reverse).
- ``folds:K``: K splits over chips assigned to folds by a seeded shuffle: tune on K-1 folds,
  report on the remaining one.
- ``all``: tune and report on every chip, flagged ``in_sample`` in every table (an optimistic
  figure, for a look only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from oncloudn.errors import ConfigError

SPLIT_RULES = ("location:A[,B]", "locations", "folds:K", "all")


@dataclass(frozen=True)
class Split:
    """One split.

    Attributes:
        name: e.g. ``tune=Chifunfu report=Eswatini``.
        tune: Chips the setting is chosen on (sorted).
        report: Chips it is reported on (sorted; disjoint from ``tune`` unless in-sample).
        in_sample: ``True`` only for the ``all`` rule.
    """

    name: str
    tune: tuple[str, ...]
    report: tuple[str, ...]
    in_sample: bool = False


def make_splits(rule: str, locations: Mapping[str, str], seed: int = 0) -> list[Split]:
    """Splits of chips (``{chip_id: location}``) by a rule (see the module docstring).

    Raises:
        ConfigError: An unknown rule, a location that does not exist, a split with no chips
            on one side, or fewer than two locations/folds.
    """
    rule = rule.strip()
    chip_ids = sorted(locations)
    if rule == "all":
        return [Split("tune=all report=all (in-sample)", tuple(chip_ids), tuple(chip_ids), True)]
    if rule.startswith("location:"):
        wanted = [n.strip() for n in rule.split(":", 1)[1].split(",") if n.strip()]
        known = sorted(set(locations.values()))
        unknown = [n for n in wanted if n not in known]
        if unknown or not wanted:
            raise ConfigError(
                f"--tune {rule!r}: location(s) {unknown or wanted} not among the chips' locations "
                f"{known}"
            )
        tune = tuple(c for c in chip_ids if locations[c] in wanted)
        report = tuple(c for c in chip_ids if locations[c] not in wanted)
        name = f"tune={'+'.join(wanted)} report=others"
        if len(set(known) - set(wanted)) == 1:
            name = f"tune={'+'.join(wanted)} report={next(iter(set(known) - set(wanted)))}"
        return [_checked(Split(name, tune, report), rule)]
    if rule == "locations":
        groups = {c: locations[c] for c in chip_ids}
        names = sorted(set(groups.values()))
        if len(names) < 2:
            raise ConfigError(
                f"--tune locations needs chips of at least two locations, found {names}; "
                "use --tune folds:K"
            )
        return [
            _checked(
                Split(
                    f"tune={_others(names, name)} report={name}",
                    tuple(c for c in chip_ids if groups[c] != name),
                    tuple(c for c in chip_ids if groups[c] == name),
                ),
                rule,
            )
            for name in names
        ]
    if rule.startswith("folds:"):
        try:
            k = int(rule.split(":", 1)[1])
        except ValueError:
            k = 0
        if k < 2 or k > len(chip_ids):
            raise ConfigError(
                f"--tune {rule!r}: K must be an integer from 2 to the number of chips "
                f"({len(chip_ids)})"
            )
        order = np.random.default_rng(seed).permutation(len(chip_ids))
        fold = {chip_ids[i]: n % k for n, i in enumerate(order)}
        return [
            _checked(
                Split(
                    f"fold {f + 1}/{k}",
                    tuple(c for c in chip_ids if fold[c] != f),
                    tuple(c for c in chip_ids if fold[c] == f),
                ),
                rule,
            )
            for f in range(k)
        ]
    raise ConfigError(f"--tune {rule!r}: unknown rule; use one of {', '.join(SPLIT_RULES)}")


def _others(names: list[str], name: str) -> str:
    others = [n for n in names if n != name]
    return others[0] if len(others) == 1 else f"not {name}"


def _checked(split: Split, rule: str) -> Split:
    if not split.tune or not split.report:
        raise ConfigError(f"--tune {rule!r}: split '{split.name}' has no chips on one side")
    if set(split.tune) & set(split.report):
        raise ConfigError(f"--tune {rule!r}: split '{split.name}' tunes on chips it reports")
    return split

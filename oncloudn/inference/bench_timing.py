"""Timing helpers shared by the ``bench`` benchmarks: medians of repeated runs, one table.

Figures are reported, never judged: CPU figures swing 3-4x with other work on the machine,
so compare rows of one run (the load average is recorded beside them).
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class BenchRow:
    """One measured configuration.

    Attributes:
        name: What was measured (backend, TTA views, ...).
        chips_per_s: Median chips per second over the repeats.
        ms_per_chip: ``1000 / chips_per_s``.
        repeats: Timed repeats (after one warm-up run).
        n_chips: Chips per repeat.
        extra: Other figures (params, file size, start-up seconds...).
    """

    name: str
    chips_per_s: float
    ms_per_chip: float
    repeats: int
    n_chips: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON-ready dict."""
        return asdict(self)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def time_repeats(run: Callable[[], Any], n_chips: int, repeats: int, name: str) -> BenchRow:
    """Median chips/s of ``run`` (which handles ``n_chips`` chips) over ``repeats`` runs.

    One untimed warm-up run comes first (allocators, traced graphs, caches).

    Raises:
        ValueError: ``repeats`` or ``n_chips`` below 1.
    """
    if repeats < 1 or n_chips < 1:
        raise ValueError(f"repeats and chips must be >= 1 (got {repeats}, {n_chips})")
    run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(n_chips / max(time.perf_counter() - start, 1e-9))
    rate = statistics.median(rates)
    return BenchRow(name, round(rate, 3), round(1000.0 / rate, 2), repeats, n_chips)


def format_rows(title: str, rows: list[BenchRow], extra_keys: tuple[str, ...] = ()) -> str:
    """A plain-text table of rows (chips/s, ms/chip and the named extra figures)."""
    header = ["", "chips/s", "ms/chip", *extra_keys]
    lines = [[row.name, f"{row.chips_per_s:.2f}", f"{row.ms_per_chip:.1f}"] for row in rows]
    for line, row in zip(lines, rows, strict=True):
        line.extend(_cell(row.extra.get(key)) for key in extra_keys)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    text = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    text += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(text)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, int) and value >= 10000:
        return f"{value:,}"
    return str(value)

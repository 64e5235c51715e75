"""``argparse`` types that refuse out-of-range numbers when the command line is parsed.

A wrong value stops with argparse's usage line and one error naming the option and the
range, exit status 2, before anything runs (``--max-chips -5`` no longer checks 0 chips).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _bounded(
    convert: Callable[[str], float], low: float, high: float | None, strict: bool, words: str
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {words}") from None
        too_low = value <= low if strict else value < low
        if too_low or (high is not None and value > high) or value != value:
            raise argparse.ArgumentTypeError(f"must be {words}, got {text}")
        return value

    parse.__name__ = words  # argparse names the type in some messages
    return parse


positive_int = _bounded(int, 1, None, False, "an integer >= 1")
"""An integer >= 1 (counts, limits)."""

non_negative_int = _bounded(int, 0, None, False, "an integer >= 0")
"""An integer >= 0 (0 disables, e.g. ``--bootstrap 0``)."""

positive_float = _bounded(float, 0.0, float("inf"), True, "a number > 0")
"""A finite number > 0 (seconds, sizes)."""

uint8_value = _bounded(int, 0, 255, False, "an integer in 0..255 (a uint8 label value)")
"""A value a uint8 label can hold."""


def add_fast_argument(parser: argparse.ArgumentParser) -> None:
    """``--fast LAYOUT``: the fast path of torch networks (``oncloudn/runtime/fast.py``)."""
    parser.add_argument(
        "--fast",
        metavar="LAYOUT",
        default="auto",
        help="fast path of torch networks: auto (default: the fastest for the device), mkldnn, "
        "channels_last, jit, plain, or off (the plain network)",
    )

"""Entry point of the ``oncloudn`` command: one sub-command per feature.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
sub-command(s) and sets ``func`` (called with the parsed arguments; returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from oncloudn import __version__
from oncloudn.errors import USER_ERRORS

COMMAND_MODULES = [  # in pipeline order, as `oncloudn --help` lists them
    "oncloudn.cli.demo_commands",
    "oncloudn.cli.data_commands",
    "oncloudn.cli.download_commands",
    "oncloudn.cli.train_commands",
    "oncloudn.cli.distill_commands",
    "oncloudn.cli.nnunet_commands",
    "oncloudn.cli.predict_commands",
    "oncloudn.cli.scene_commands",
    "oncloudn.cli.teacher_commands",
    "oncloudn.cli.models_commands",
    "oncloudn.cli.sweep_commands",
    "oncloudn.cli.export_commands",
    "oncloudn.cli.submission_commands",
    "oncloudn.cli.score_commands",
    "oncloudn.cli.bench_commands",
]

DESCRIPTION = """\
Cloud segmentation toolkit for the On Cloud N challenge (Sentinel-2, B02/B03/B04/B08).

Pipeline: sample-data/check-data -> train (or distill) -> predict -> pack -> run-local -> score.
Run `oncloudn demo` for the whole path on generated sample data."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="oncloudn",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"oncloudn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Log to stderr: INFO by default, DEBUG with ``-v``, WARNING with ``-q`` (rasterio: ``-v``)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    # GDAL's messages reach the user inside the errors that name the file (runtime.chipio),
    # not as log lines: rasterio's own log shows with -v only.
    logging.getLogger("rasterio").setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; user errors print one line and exit with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    configure_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

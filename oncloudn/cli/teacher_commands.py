"""``oncloudn teachers add|show``: pretrained teachers as model folders, and what a folder is."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from oncloudn.errors import ConfigError

TEACHERS_EPILOG = """\
A teacher is a model folder like any other: `predict`, `score`, `flag-labels` and ensembles
use it unchanged. ukis-csmask (DLR, Apache-2.0) is the pretrained 4-band cloud/shadow U-Net of
the ukis-csmask wheel, run by ONNX Runtime (kind `onnx`, library-only: `pack` refuses it;
distill it into a student to submit). It needs `pip install 'oncloudn[teachers]'`.

examples:
  oncloudn teachers add ukis-csmask models/ukis
  oncloudn teachers add ukis-csmask models/ukis-l1c --product l1c --threads 2
  oncloudn teachers show models/ukis
  oncloudn predict models/ukis data/train_features preds/ukis --device cpu"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``teachers`` sub-command and its ``add`` and ``show`` actions."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.teachers.catalog import TEACHERS
    from oncloudn.teachers.ukis import PRODUCTS

    parser = subparsers.add_parser(
        "teachers",
        help="add a pretrained teacher as a model folder; describe any model folder",
        description="Write pretrained teachers as model folders, and describe model folders.",
        epilog=TEACHERS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        help="write a teacher's model folder",
        description="Write a self-contained model folder for a pretrained teacher.",
        epilog=TEACHERS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("name", choices=sorted(TEACHERS), help="the teacher")
    add.add_argument("out", type=Path, help="model folder to create")
    add.add_argument(
        "--product",
        choices=PRODUCTS,
        default="l2a",
        help="ukis-csmask: the model for this product level (default: l2a, as On Cloud N)",
    )
    add.add_argument(
        "--threads", type=int, metavar="N", help="ONNX Runtime intra-op threads (default: its own)"
    )
    add.add_argument("--force", action="store_true", help="replace an existing model folder")
    add.set_defaults(func=run_add)
    show = actions.add_parser(
        "show",
        help="describe a model folder",
        description="Describe any model folder: kind, bands, normalization, options, "
        "parameters, size on disk, provenance and licence.",
    )
    show.add_argument("path", type=Path, help="a model folder")
    show.add_argument("--json", action="store_true", help="print the description as JSON")
    show.set_defaults(func=run_show)


def run_add(args: argparse.Namespace) -> int:
    """Write the teacher's folder and print where; exit 0."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.teachers.catalog import add_teacher

    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    folder = add_teacher(
        args.name, args.out, product=args.product, threads=args.threads, force=args.force
    )
    print(f"{args.name} teacher written to {folder} (see `oncloudn teachers show {folder}`)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print the folder's description; exit 0."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.teachers.describe import describe_folder, format_description

    summary = describe_folder(args.path)
    print(json.dumps(summary, indent=2) if args.json else format_description(summary))
    return 0

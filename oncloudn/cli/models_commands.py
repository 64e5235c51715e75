"""``oncloudn models compare``: model folders side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from oncloudn.runtime.atomic import atomic_write_json

COMPARE_EPILOG = """\
For each model folder (any kind: networks, ensembles, the threshold rule, ONNX teachers):
trainable parameters, size on disk, GFLOPs per 512 x 512 chip with its TTA views (torch
networks only), and with --data the CPU chips/s over that features folder through the
prediction core (reading, TTA and post-processing included; single process, this machine's
threads) and the agreement of every pair: the pooled Jaccard of one model's masks against
the other's. Speed figures swing with machine load: compare models in one run.

examples:
  oncloudn models compare runs/student/fold_0 teachers/ukis
  oncloudn models compare teachers/ukis runs/student/fold_0 --data data/test_features --max-chips 20
  oncloudn models compare a b c --data data/test_features --json compare.json"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` sub-command and its ``compare`` action."""
    parser = subparsers.add_parser(
        "models", help="compare model folders (size, FLOPs, speed, agreement)"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    compare = actions.add_parser(
        "compare",
        help="parameters, size, FLOPs, CPU chips/s and mask agreement of model folders",
        description="Measure model folders side by side.",
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("models", nargs="+", type=Path, help="model folders")
    compare.add_argument("--data", type=Path, metavar="FEATURES", help="features folder")
    compare.add_argument("--max-chips", type=int, metavar="N", help="first N chips only")
    compare.add_argument("--batch-size", type=int, default=4, metavar="N", help="default: 4")
    compare.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    compare.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """Measure and print the table; exit 0."""
    # lazy: keeps `oncloudn --help` fast (torch)
    from oncloudn.inference.compare import compare_models, format_comparison

    comparison = compare_models(args.models, args.data, args.max_chips, args.batch_size)
    print(format_comparison(comparison))
    if args.json:
        atomic_write_json(args.json, comparison.to_dict())
    return 0

"""``oncloudn distill``: train a small student from a teacher model folder (config-driven)."""

from __future__ import annotations

import argparse

from oncloudn.cli.train_commands import (
    add_run_arguments,
    print_run_result,
    resume_choice,
    run_overrides,
)

DISTILL_EPILOG = """\
examples:
  oncloudn distill configs/distill_sample.yaml --set teacher.path=runs/tiny/fold_0
  oncloudn distill configs/distill_sample.yaml --set teacher.path=runs/tiny/fold_0 \\
      --set distillation.mode=online --set distillation.alpha=1.0
  oncloudn distill CONFIG --set "data.extra_roots=[{path: data/unlabelled}]" \\
      --set "data.holdout_locations=[Chifunfu]" --all-folds
  oncloudn distill CONFIG --cache-only            # fill the teacher cache, then stop
  oncloudn distill CONFIG --resume                # continue after a kill

A distill config is a train config (same sections, same meaning) plus `teacher` (any model
folder) and `distillation` (mode online|cached, temperature, alpha, disagreement_weight,
use_labels, cache_dir); `data.extra_roots` adds dataset roots, labelled or not, and
`data.holdout_locations` removes locations from every root. Each fold writes an ordinary
student model folder OUT/fold_<k>/ (packs like any other; the teacher is not needed to run
it) whose provenance names the teacher and the data with their licences."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``distill``."""
    parser = subparsers.add_parser(
        "distill",
        help="distil a teacher model folder into a small student (one model folder per fold)",
        description=(
            "Train a student (default: the runtime's 492,809-parameter plain U-Net with a "
            "space-to-depth stem) on the "
            "teacher's temperature-softened cloud-vs-clear logits, online or cached, mixed "
            "with the labels where they exist; checkpoints, resume, folds and DDP as in train."
        ),
        epilog=DISTILL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--cache-only",
        action="store_true",
        help="fill the teacher cache (cached mode's targets) and stop",
    )
    parser.set_defaults(func=run_distill)


def run_distill(args: argparse.Namespace) -> int:
    """Load the distill config, distil, print one line per fold."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.config import DistillConfig, load_config
    from oncloudn.training.distill.run import distill

    config = load_config(args.config, run_overrides(args), DistillConfig)
    result = distill(config, resume=resume_choice(args), cache_only=args.cache_only)
    if result is None:
        print("teacher cache filled")
        return 0
    print_run_result(result)
    return 0

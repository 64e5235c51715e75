"""``oncloudn demo``: the whole pipeline on generated sample data."""

from __future__ import annotations

import argparse

EPILOG = """\
example:
  oncloudn demo demo_run                 # sample data -> train -> pack -> run-local -> score
  oncloudn demo demo_run --no-train      # thresholding rule only (under a minute)"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on generated sample data",
        description=(
            "Generate sample data, check it, train a tiny U-Net, pack it and the classic "
            "thresholding rule as submission.zip files, run each like the competition "
            "runtime, score it against the sample test labels and print the leaderboard."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", help="folder for everything the demo writes (empty or absent)")
    parser.add_argument("--chips", type=int, default=24, help="training chips (default 24)")
    parser.add_argument("--test-chips", type=int, default=8, help="test chips (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--epochs", type=int, default=12, help="U-Net epochs (default 12)")
    parser.add_argument("--no-train", action="store_true", help="skip the U-Net")
    parser.add_argument("--force", action="store_true", help="reuse a non-empty OUT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its scores."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.demo import run_demo

    result = run_demo(
        args.out,
        chips=args.chips,
        test_chips=args.test_chips,
        seed=args.seed,
        epochs=args.epochs,
        train=not args.no_train,
        force=args.force,
    )
    print(f"demo finished in {result.seconds:.0f} s; everything is in {result.out_dir}")
    for name, score in result.scores.items():
        print(f"  {name:<12} Jaccard on the sample test split: {score:.4f}")
    print(f"leaderboard: oncloudn leaderboard --db {result.out_dir / 'leaderboard.sqlite'}")
    return 0

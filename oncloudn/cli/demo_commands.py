"""``oncloudn demo``: the distillation recipe end to end on generated sample data."""

from __future__ import annotations

import argparse

EPILOG = """\
example:
  oncloudn demo demo_run             # data -> teacher -> student -> pack -> run-local -> score
  oncloudn demo demo_run2 --seed 1   # another seed: other chips, other runs
  oncloudn demo demo_run3 --no-train # thresholding rule only (under a minute)
  oncloudn demo demo_run4 --quick    # every stage, one short epoch per run (smoke test)"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the teacher -> student recipe on generated sample data",
        description=(
            "Generate labelled and unlabelled sample data, check it, train a teacher U-Net "
            "(configs/demo_teacher.yaml), distil it into a ~490k-parameter student "
            "(configs/demo_student.yaml), pack both and the classic thresholding rule as "
            "submission.zip files, run each like the competition runtime, score it against "
            "the sample test labels, record it on the local leaderboard and print a table."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", help="folder for everything the demo writes (empty or absent)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument(
        "--chips", type=int, default=24, help="labelled training chips (default 24)"
    )
    parser.add_argument("--test-chips", type=int, default=8, help="test chips (default 8)")
    parser.add_argument(
        "--unlabelled-chips",
        type=int,
        default=24,
        help="extra unlabelled training chips the teacher labels (default 24)",
    )
    parser.add_argument("--teacher-config", help="default: configs/demo_teacher.yaml")
    parser.add_argument("--student-config", help="default: configs/demo_student.yaml")
    parser.add_argument("--no-train", action="store_true", help="thresholding rule only")
    parser.add_argument(
        "--quick", action="store_true", help="one short epoch per run (scores mean nothing)"
    )
    parser.add_argument("--force", action="store_true", help="reuse a non-empty OUT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its table."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.demo import format_stages, format_table, run_demo

    result = run_demo(
        args.out,
        chips=args.chips,
        test_chips=args.test_chips,
        unlabelled_chips=args.unlabelled_chips,
        seed=args.seed,
        train=not args.no_train,
        quick=args.quick,
        force=args.force,
        teacher_config=args.teacher_config,
        student_config=args.student_config,
    )
    print(f"demo finished in {result.seconds:.0f} s; everything is in {result.out_dir}")
    print(format_stages(result))
    print(f"Jaccard on the sample test split (seed {args.seed}):")
    print(format_table(result))
    print(f"leaderboard: oncloudn leaderboard --db {result.out_dir / 'leaderboard.sqlite'}")
    return 0

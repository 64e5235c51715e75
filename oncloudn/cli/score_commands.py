"""Scoring commands: ``score`` (competition Jaccard of a predictions folder) and
``leaderboard`` (recorded runs, ranked)."""

from __future__ import annotations

import argparse
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from oncloudn.cli.arg_types import non_negative_int, positive_int, uint8_value
from oncloudn.errors import DataError

SCORE_EPILOG = """\
The score is the competition's: Jaccard over all pixels of all chips pooled (sum of
intersections / sum of unions); any nonzero label pixel is cloud unless --ignore-value is
given. The interval resamples chips with replacement. Predictions that break the runtime's
rules (missing/extra/hidden files, not 512 x 512 single-band 0/1, over 524,288 bytes,
PIL and tifffile disagree) are refused with exit status 2.

examples:
  oncloudn score runs/local/predictions data/test_labels
  oncloudn score preds/ data/train_labels --metadata data/train_metadata.csv --worst 20
  oncloudn score runs/local/predictions data/test_labels --record --name unet-r34
  oncloudn score preds/ labels/ --ignore-value 255 --bootstrap 2000 --json score.json"""

LEADERBOARD_EPILOG = """\
The database defaults to $ONCLOUDN_LEADERBOARD or ~/.oncloudn/leaderboard.sqlite; runs are
added with `oncloudn score ... --record`.

examples:
  oncloudn leaderboard
  oncloudn leaderboard --reference --limit 10
  oncloudn leaderboard --db runs/leaderboard.sqlite"""

REFERENCE_NOTE = (
    "Reference rows are the competition's private-leaderboard Jaccard on its 10,980 test "
    "chips (before the labels were released and expert-validated); local scores are not "
    "comparable 1:1 with them."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``score`` and ``leaderboard`` sub-commands."""
    score = subparsers.add_parser(
        "score",
        help="score a predictions folder with the competition metric",
        description="Check a predictions folder against the runtime's rules, then score it "
        "with the competition metric (pooled Jaccard), per location and per chip.",
        epilog=SCORE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("pred_dir", type=Path, help="folder of <chip_id>.tif predictions")
    score.add_argument("label_dir", type=Path, help="folder of <chip_id>.tif labels")
    score.add_argument(
        "--metadata",
        type=Path,
        help="CSV with chip_id and location (default: <split>_metadata.csv beside "
        "<split>_labels when present)",
    )
    score.add_argument(
        "--ignore-value",
        type=uint8_value,
        metavar="V",
        help="leave label pixels equal to V (e.g. 255) out of the score (off by default, as "
        "in the competition)",
    )
    score.add_argument(
        "--bootstrap",
        type=non_negative_int,
        default=1000,
        metavar="N",
        help="chip resamples of the 95%% interval; 0 disables it (default: 1000)",
    )
    score.add_argument("--seed", type=int, default=0, help="seed of the interval (default: 0)")
    score.add_argument(
        "--worst",
        type=non_negative_int,
        default=10,
        metavar="K",
        help="list the K worst chips (default: 10)",
    )
    score.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON")
    score.add_argument(
        "--record",
        action="store_true",
        help="add the run to the leaderboard (merging run.json found beside PRED_DIR)",
    )
    score.add_argument("--db", type=Path, help="leaderboard database (default: see leaderboard)")
    score.add_argument("--name", help="name of the recorded run (default: run.json's or folder)")
    score.set_defaults(func=run_score)

    board = subparsers.add_parser(
        "leaderboard",
        help="show recorded runs ranked by Jaccard",
        description="Show the runs recorded with `score --record`, ranked by pooled Jaccard.",
        epilog=LEADERBOARD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    board.add_argument("--db", type=Path, help="leaderboard database")
    board.add_argument(
        "--reference",
        action="store_true",
        help="also list the competition's published private-leaderboard scores (1st-3rd "
        "place, benchmark, thresholding) beside the local runs",
    )
    board.add_argument("--limit", type=positive_int, metavar="N", help="show only the best N runs")
    board.set_defaults(func=run_leaderboard)


def run_score(args: argparse.Namespace) -> int:
    """Score, print, and optionally write JSON and record the run."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.runtime.atomic import atomic_write_json
    from oncloudn.scoring.report import score_folders

    report = score_folders(
        args.pred_dir,
        args.label_dir,
        metadata_csv=args.metadata,
        ignore_value=args.ignore_value,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
    )
    print(report.format(worst=args.worst))
    if args.json:
        atomic_write_json(args.json, report.to_dict())
        print(f"\nreport written to {args.json}")
    if args.record:
        # lazy: keeps `oncloudn --help` fast
        from oncloudn.scoring.leaderboard import default_db_path, load_run_info, record_run

        info = load_run_info(args.pred_dir)
        if args.name:
            info["name"] = args.name
        db_path = args.db or default_db_path()
        with database_errors(db_path):
            run_id = record_run(db_path, report, info)
        print(f"\nrecorded as run #{run_id} in {db_path}")
    return 0


def run_leaderboard(args: argparse.Namespace) -> int:
    """Print the ranked runs, optionally with the reference scores."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.scoring.leaderboard import default_db_path, leaderboard

    db_path = args.db or default_db_path()
    with database_errors(db_path):
        runs = leaderboard(db_path, limit=args.limit)
    if runs.empty and not args.reference:
        print(f"no runs recorded in {db_path} yet; add one with `oncloudn score ... --record`")
        return 0
    print(f"Leaderboard {db_path}")
    print(_format_board(runs, args.reference))
    if args.reference:
        print(f"\n* {REFERENCE_NOTE}")
    return 0


def _format_board(runs: pd.DataFrame, with_reference: bool) -> str:
    rows = [
        {
            "rank": str(run.rank),
            "jaccard": run.jaccard,
            "95% CI": _interval(run.ci_low, run.ci_high),
            "name": one_line(run.name),
            "source": "local",
            "chips": str(run.n_chips),
            "chips/s": "" if pd.isna(run.chips_per_s) else f"{run.chips_per_s:.2f}",
            "time": run.time,
            "id": str(run.id),
        }
        for run in runs.itertuples(index=False)
    ]
    if with_reference:
        # lazy: keeps `oncloudn --help` fast
        from oncloudn.scoring.reference import reference_frame

        rows += [
            {
                "rank": "-",
                "jaccard": ref.jaccard,
                "95% CI": "",
                "name": ref.system,
                "source": f"{ref.source} *",
                "chips": "10980",
                "chips/s": "",
                "time": "",
                "id": "",
            }
            for ref in reference_frame().itertuples(index=False)
        ]
    if not rows:
        return "  (no runs)"
    table = pd.DataFrame(rows).sort_values("jaccard", ascending=False, kind="stable")
    table["jaccard"] = table["jaccard"].map(lambda v: "nan" if pd.isna(v) else f"{v:.4f}")
    left = {}
    for column in ("name", "source", "time"):
        width = int(table[column].str.len().max())
        left[column] = lambda value, width=width: f"{value:<{width}}"
    return table.to_string(index=False, formatters=left, justify="left")


@contextmanager
def database_errors(db_path: Path) -> Iterator[None]:
    """Turn SQLite's errors about ``db_path`` into one line naming the file.

    Raises:
        DataError: The file is not a SQLite database (or SQLite cannot use it).
    """
    try:
        yield
    except sqlite3.DatabaseError as error:
        raise DataError(
            f"{db_path} is not a usable leaderboard database ({error}); pass another --db, or "
            "move the file away to start a new leaderboard"
        ) from None


def one_line(text: object) -> str:
    """``text`` with line breaks and other control characters escaped, for a table row."""
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in str(text)
    )


def _interval(low: float | None, high: float | None) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return ""
    return f"{low:.4f}-{high:.4f}"

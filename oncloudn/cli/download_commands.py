"""``oncloudn download``: the released On Cloud N data into a dataset root."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
Sources (--base-url): azure (default; the Azure blob torchgeo's CloudCoverDetection syncs
from), source-coop (Source Cooperative's HTTPS proxy), or the URL of any folder holding
public/ (train) and private/ (test) in the competition's layout. Neither public host was
reachable from the machine this command was written on: it was tested against a local
mirror only.

Files go to ROOT/{split}_features/<chip_id>/B0X.tif, ROOT/{split}_labels/<chip_id>.tif and
ROOT/{split}_metadata.csv (the chips in place). Partial files wait in ROOT/.download/ and
resume with HTTP Range requests; a chip appears in ROOT only once all its files arrived and
decode. ROOT/{split}_download_manifest.json holds every file's SHA-256: running the command
again verifies what is there and fetches only what is missing or no longer matches.
The free-disk check counts 2.4 MB a chip with its label (512 x 512, uncompressed): about
54 GB for both splits.

exit status: 0 when every chip is in place, 1 when some chips failed (listed; run again to
retry them), 2 on bad input or an unreachable host.

examples:
  oncloudn download data/oncloudn --split test --labels
  oncloudn download data/oncloudn --split train --labels --workers 16
  oncloudn download data/small --split train --labels --max-chips 200
  oncloudn download data/picked --split test --chips my_chips.txt --base-url source-coop"""

MAX_LISTED = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``download`` sub-command."""
    parser = subparsers.add_parser(
        "download",
        help="download the released On Cloud N data (resumable, verified) into a dataset root",
        description="Download one split of the released On Cloud N data over HTTPS into the "
        "dataset-root layout, driven by the split's metadata CSV: parallel, resumable, "
        "retried, each TIFF decoded, a SHA-256 manifest that later runs verify.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", type=Path, metavar="ROOT", help="dataset root to fill")
    parser.add_argument("--split", choices=("train", "test"), default="train")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--chips", type=Path, metavar="FILE", help="only these chips (one id per line, or a CSV)"
    )
    which.add_argument(
        "--max-chips", type=int, metavar="N", help="only the metadata CSV's first N chips"
    )
    parser.add_argument("--labels", action="store_true", help="also fetch the label files")
    parser.add_argument(
        "--base-url", metavar="URL", help="azure (default), source-coop, or a mirror's URL"
    )
    parser.add_argument("--workers", type=int, default=8, help="parallel chips (default 8)")
    parser.add_argument(
        "--retries", type=int, default=4, help="retries per file, with backoff (default 4)"
    )
    parser.set_defaults(func=run_download)


def run_download(args: argparse.Namespace) -> int:
    """Download; print a summary; exit 1 when some chips failed."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.data.download.runner import download_dataset
    from oncloudn.data.download.selection import read_chip_list

    chips = read_chip_list(args.chips) if args.chips else None
    summary = download_dataset(
        args.root,
        split=args.split,
        labels=args.labels,
        chips=chips,
        max_chips=args.max_chips,
        base_url=args.base_url,
        workers=args.workers,
        retries=args.retries,
    )
    in_place = summary.n_chips - len(summary.failed)
    print(
        f"{summary.split}: {in_place} of {summary.n_chips} chips in {summary.root} "
        f"({summary.fetched} files fetched, {summary.bytes_received / 1e6:.1f} MB, "
        f"{summary.verified} already there and verified, {summary.refetched} fetched again, "
        f"{summary.resumed} resumed, {summary.retried} retried) in {summary.wall_s:.1f} s"
    )
    print(f"manifest: {summary.manifest}; metadata: {summary.metadata}")
    for chip_id, reason in list(summary.failed.items())[:MAX_LISTED]:
        print(f"  failed {chip_id}: {reason}")
    if len(summary.failed) > MAX_LISTED:
        print(f"  ... and {len(summary.failed) - MAX_LISTED} more")
    if summary.failed:
        print("run the same command again to retry the failed chips")
    return 1 if summary.failed else 0

"""Data commands: ``sample-data`` (generate a synthetic dataset root) and ``check-data``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from oncloudn.cli.arg_types import non_negative_int, positive_int

SAMPLE_EPILOG = """\
examples:
  oncloudn sample-data data/sample
  oncloudn sample-data data/tiny --chips 8 --test-chips 4 --size 256 --seed 1
  oncloudn sample-data data/noisy --chips 48 --locations 6 --label-noise 0.1 --force"""

CHECK_EPILOG = """\
examples:
  oncloudn check-data data/sample
  oncloudn check-data data/sample --split test --json report.json
  oncloudn check-data /data/oncloudn --max-chips 500

exit status: 0 when the split is usable (suspicious labels are only listed), 1 when it has
structural errors (missing/corrupt files, wrong shapes or dtypes, CSV problems)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data sub-commands."""
    _register_sample(subparsers)
    _register_check(subparsers)


def _register_sample(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample-data",
        help="generate a synthetic On Cloud N dataset root (train and test splits)",
        description=(
            "Generate realistic synthetic Sentinel-2 chips in the On Cloud N layout: "
            "OUT/{train,test}_features/<chip_id>/B0{2,3,4,8}.tif (uint16 GeoTIFFs, UTM, "
            "10 m, nodata 0), OUT/{train,test}_labels/<chip_id>.tif and the metadata CSVs. "
            "Scenes mix vegetation, soil, water, bright desert and snow under thick and thin "
            "clouds, haze and shadows; the same seed gives identical files."
        ),
        epilog=SAMPLE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="dataset root to create")
    parser.add_argument(
        "--chips", type=positive_int, default=24, help="training chips (default 24)"
    )
    parser.add_argument(
        "--test-chips", type=non_negative_int, default=8, help="test chips (default 8)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size", type=int, default=512, help="chip height and width in pixels (default 512)"
    )
    parser.add_argument(
        "--locations",
        type=int,
        default=6,
        help="number of locations (default 6, enough for 5 location-grouped folds)",
    )
    parser.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of training chips with a corrupted label (default 0)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing dataset root at OUT"
    )
    parser.set_defaults(func=_run_sample)


def _register_check(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-data",
        help="check a dataset root's files and label statistics",
        description=(
            "Check one split of a dataset root: metadata CSV columns and rows, every chip's "
            "band files (present, decodable, single-band uint16, equal shapes) and label; "
            "report locations, nodata, the cloud-fraction distribution and suspicious labels "
            "(all cloud, empty while bright, inverted-looking)."
        ),
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", type=Path, metavar="ROOT", help="dataset root")
    parser.add_argument(
        "--split", choices=("train", "test"), default="train", help="split (default train)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    parser.add_argument(
        "--max-chips",
        type=positive_int,
        metavar="N",
        help="read only the first N chips (default all)",
    )
    parser.set_defaults(func=_run_check)


def _run_sample(args: argparse.Namespace) -> int:
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.data.sample import generate_sample_dataset

    start = time.perf_counter()
    out = generate_sample_dataset(
        args.out,
        chips=args.chips,
        test_chips=args.test_chips,
        seed=args.seed,
        size=args.size,
        n_locations=args.locations,
        label_noise=args.label_noise,
        force=args.force,
    )
    elapsed = time.perf_counter() - start
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.data.sample import read_sample_info

    info = read_sample_info(out)
    names = ", ".join(location["name"] for location in info.get("locations", []))
    print(
        f"wrote {args.chips} train + {args.test_chips} test chips "
        f"({args.size}x{args.size}, seed {args.seed}) to {out} in {elapsed:.1f} s"
    )
    print(f"locations ({args.locations}): {names}")
    corrupted = info.get("corrupted_labels", {})
    if corrupted:
        print(f"corrupted labels ({len(corrupted)}): listed in {out / 'sample_info.json'}")
    print(f"next: oncloudn check-data {out}")
    return 0


def _run_check(args: argparse.Namespace) -> int:
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.data.validate import check_dataset
    from oncloudn.runtime.atomic import atomic_write_json

    report = check_dataset(args.root, split=args.split, max_chips=args.max_chips)
    print(report.format())
    if args.json:
        atomic_write_json(args.json, report.to_dict())
        print(f"report written to {args.json}")
    return 1 if report.has_structural_errors else 0

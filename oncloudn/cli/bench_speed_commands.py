"""``bench read|predict|zip``: prediction-speed benchmarks (``bench_commands.BENCH_MODULES``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from oncloudn.runtime.atomic import atomic_write_json

PREDICT_EPILOG = """\
Chips are read once into memory; each row is the median of --repeats timed passes over
them (after one warm-up pass). Backends: eager (torch as loaded), fast (the runtime's fast
path, what main.py runs), onnx, openvino, openvino-fp16, int8 (the folder exported to a
temporary folder; int8 calibrated on the same chips). Then TTA cost (fast backend), the
manifest's post-processing in ms/chip, and a reference row (smp U-Net ResNet-34, batch 1,
fp32 eager: the competition benchmark's model). CPU figures swing with machine load:
compare rows of one run (the load average is printed).

examples:
  oncloudn bench predict runs/student/fold_0 data/test_features
  oncloudn bench predict runs/student/fold_0 data/test_features --backends eager,fast,onnx \\
      --tta 1,8 --chips 16 --repeats 5 --json bench.json"""

ZIP_EPILOG = """\
Runs the zip like `run-local` (sandbox, import guard, the runtime Python when built) --repeats
times and reports the prediction phase's chips/s and the start-up seconds apart (medians).

examples:
  oncloudn bench zip submission.zip data --repeats 3 --json zip.json"""


def register_bench(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench read``, ``bench predict`` and ``bench zip``."""
    read = subparsers.add_parser(
        "read", help="chips/s of reading chips (rasterio, 4 bands)", description=__doc__
    )
    read.add_argument("features", type=Path, metavar="FEATURES", help="<root>/test_features")
    read.add_argument("--chips", type=int, default=32, help="chips per pass (default 32)")
    read.add_argument("--repeats", type=int, default=3, help="timed passes (default 3)")
    read.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    read.set_defaults(func=run_bench_read)

    predict = subparsers.add_parser(
        "predict",
        help="model chips/s per backend, TTA cost, post-processing, reference row",
        description="Measure a network model folder on every backend.",
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    predict.add_argument("features", type=Path, metavar="FEATURES", help="<root>/test_features")
    predict.add_argument("--chips", type=int, default=8, help="chips in memory (default 8)")
    predict.add_argument("--repeats", type=int, default=3, help="timed passes (default 3)")
    predict.add_argument("--batch-size", type=int, default=2, help="default 2")
    predict.add_argument(
        "--backends",
        default="eager,fast,onnx,openvino,openvino-fp16,int8",
        help="comma-separated (default: all)",
    )
    predict.add_argument("--tta", default="1,2,4,8", help="TTA view counts (default 1,2,4,8)")
    predict.add_argument(
        "--reference-chips", type=int, default=2, help="chips for the reference row (0: none)"
    )
    predict.add_argument("--threads", type=int, help="threads (default: the CPUs available)")
    predict.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    predict.set_defaults(func=run_bench_predict)

    zip_parser = subparsers.add_parser(
        "zip",
        help="a packed zip run the runtime way: start-up seconds and chips/s",
        description="Time a submission zip's main.py like run-local.",
        epilog=ZIP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    zip_parser.add_argument("zip", type=Path, metavar="ZIP")
    zip_parser.add_argument("data", type=Path, metavar="DATA", help="a root with test_features/")
    zip_parser.add_argument("--repeats", type=int, default=3, help="runs (default 3)")
    zip_parser.add_argument("--python", help="interpreter (default: the runtime Python if built)")
    zip_parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    zip_parser.set_defaults(func=run_bench_zip)


def _ints(text: str, name: str) -> list[int]:
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.errors import ConfigError

    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"{name} {text!r} must be comma-separated integers, e.g. 1,2,4,8"
        ) from None


def run_bench_read(args: argparse.Namespace) -> int:
    """Time reading chips and print the row."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.inference.bench_read import bench_read
    from oncloudn.inference.bench_timing import format_rows, load_average

    row = bench_read(args.features, args.chips, args.repeats)
    row.extra["load_average"] = load_average()
    print(format_rows(f"bench read {args.features}:", [row], ("load_average",)))
    if args.json:
        atomic_write_json(args.json, row.to_dict())
    return 0


def run_bench_predict(args: argparse.Namespace) -> int:
    """Measure every backend and print the tables."""
    # lazy: keeps `oncloudn --help` fast (torch)
    from oncloudn.inference.bench_predict import bench_predict

    result = bench_predict(
        args.model_dir,
        args.features,
        limit=args.chips,
        repeats=args.repeats,
        batch_size=args.batch_size,
        backends=[b.strip() for b in args.backends.split(",") if b.strip()],
        tta_counts=_ints(args.tta, "--tta"),
        reference_chips=args.reference_chips,
        threads=args.threads,
    )
    print(result.format())
    if args.json:
        atomic_write_json(args.json, result.to_dict())
    return 0


def run_bench_zip(args: argparse.Namespace) -> int:
    """Run the zip and print start-up and chips/s."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.inference.bench_timing import format_rows
    from oncloudn.submission.bench_zip import bench_zip

    row = bench_zip(args.zip, args.data, args.repeats, args.python)
    keys = ("startup_s", "whole_run_chips_per_s", "fast_layout", "load_average_after")
    print(format_rows(f"bench zip ({row.n_chips} chips, median of {row.repeats}):", [row], keys))
    if args.json:
        atomic_write_json(args.json, row.to_dict())
    return 0

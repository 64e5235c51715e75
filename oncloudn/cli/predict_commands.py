"""``oncloudn predict``: a model folder over a features folder, masks or probabilities out."""

from __future__ import annotations

import argparse
from pathlib import Path

from oncloudn.cli.arg_types import add_fast_argument

PREDICT_EPILOG = """\
FEATURES is a features folder (<root>/test_features or <root>/train_features: one folder per
chip with B02.tif ... B08.tif). OUT receives one <chip_id>.tif per chip, georeferenced like
the input: uint8 0/1 masks after the manifest's threshold and post-processing (the same masks
submission/main.py writes, through the same prediction core), or float32 cloud probabilities
with --probabilities. Unreadable chips get the runtime's fallback (the threshold rule),
georeferenced like any readable band. Chips of any size the network accepts are predicted
(padded to its stride by reflection); only main.py insists on 512 x 512. CUDA and float16
autocast are used when available.

examples:
  oncloudn predict runs/unet/model data/test_features preds/unet
  oncloudn predict runs/unet/model data/test_features probs/unet --probabilities
  oncloudn predict runs/unet/model data/test_features preds/d4 --tta d4 --batch-size 16 --workers 4
  oncloudn predict runs/unet/model data/test_features preds/cpu --device cpu --tta identity,hflip"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` sub-command."""
    parser = subparsers.add_parser(
        "predict",
        help="predict cloud masks (or probabilities) for a folder of chips",
        description="Run a model folder over every chip of a features folder, batched, on "
        "GPU when available, and write one GeoTIFF per chip.",
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", type=Path, help="model folder (manifest.json + weights)")
    parser.add_argument("features", type=Path, help="features folder: <chip_id>/B0X.tif")
    parser.add_argument("out", type=Path, help="output folder for <chip_id>.tif")
    parser.add_argument(
        "--probabilities",
        action="store_true",
        help="write float32 cloud probabilities instead of 0/1 masks",
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, metavar="N", help="chips per batch (default: 8)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="threads reading the next chips while a batch is predicted (default: 2; 0: none)",
    )
    parser.add_argument(
        "--device", help="cuda, cuda:1, cpu... (default: cuda when available, else cpu)"
    )
    parser.add_argument(
        "--tta",
        metavar="VIEWS",
        help="override the manifest's TTA: none, hflip, flips, flips4, d4, or comma-separated "
        "views (identity,hflip,vflip,rot90,rot180,rot270,transpose,antitranspose)",
    )
    parser.add_argument("--no-amp", action="store_true", help="no float16 autocast on CUDA")
    add_fast_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the summary here")
    parser.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Predict and print a one-line summary; exit 0."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.inference.predictor import predict_folder
    from oncloudn.runtime.atomic import atomic_write_json

    summary = predict_folder(
        args.model_dir,
        args.features,
        args.out,
        probabilities=args.probabilities,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        amp=not args.no_amp,
        tta=args.tta,
        progress=not args.no_progress,
        fast=args.fast,
    )
    print(
        f"{summary['n_written']} {summary['output']} written to {summary['out_dir']} in "
        f"{summary['wall_s']:.1f} s ({summary['chips_per_s'] or 0:.2f} chips/s, "
        f"{summary['device']}, TTA {','.join(summary['tta_views'])}); "
        f"{summary['n_fallback']} fallbacks, {summary['n_all_nodata']} all-nodata"
    )
    for chip_id, reason in list(summary["failed"].items())[:10]:
        print(f"  fallback {chip_id}: {reason}")
    if args.json:
        atomic_write_json(args.json, summary)
    return 0

"""``oncloudn predict-scene`` (a model over one large raster) and ``oncloudn bench scene``."""

from __future__ import annotations

import argparse
from pathlib import Path

from oncloudn.cli.arg_types import add_fast_argument

PREDICT_SCENE_EPILOG = """\
SCENE is a folder of band files found by band name (a Sentinel-2 product's .SAFE folder or its
IMG_DATA/R10m, *_B02_10m.jp2 ...; or B02.tif ...), or one multi-band raster (bands by
--band-indices, else by band descriptions, else in file order). OUT is a tiled, compressed
uint8 GeoTIFF cloud mask (1 cloud, 0 clear or nodata) with the input's CRS and transform.

Windows of --window px overlapping by --overlap are predicted one by one and blended
(Gaussian or linear weights, never across nodata); all-nodata windows are skipped. The
manifest's pixel post-processing then runs over the whole scene (minimum area and hole
filling do not depend on where windows fall); chip-level rules are off. L2A/L1C products of
processing baseline >= 04.00 carry a -1000 DN offset: it is read from MTD_MSIL2A.xml /
MTD_MSIL1C.xml beside the bands, or given with --offset. A killed run resumes where it
stopped (state in .OUT.partial/ beside OUT; --restart starts over).

examples:
  oncloudn predict-scene runs/unet/model S2B_MSIL2A_20230612.SAFE masks/20230612.tif
  oncloudn predict-scene runs/unet/model scene.tif mask.tif --band-indices 1,2,3,7
  oncloudn predict-scene runs/unet/model bands/ mask.tif --offset -1000 \\
      --probabilities prob.tif --probability-dtype uint8"""

BENCH_SCENE_EPILOG = """\
examples:
  oncloudn bench scene
  oncloudn bench scene --size 4096 --backend torch
  oncloudn bench scene --model runs/unet/model --threads 2 --json bench-scene.json

Generates (once, kept in --work) a size x size 4-band GeoTIFF scene and masks it with
predict-scene's code, reporting seconds, peak memory (RSS) and where the time goes; with the
JPEG 2000 driver present, the decoding of the same bands as JP2 is timed separately."""


def _int_list(text: str) -> list[int]:
    return [int(value) for value in text.split(",") if value.strip()]


def _float_list(text: str) -> list[float]:
    return [float(value) for value in text.split(",") if value.strip()]


def _add_tiling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--window", type=int, default=1024, metavar="PX", help="window side (default 1024)"
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=128,
        metavar="PX",
        help="overlap of neighbouring windows (default 128, at most half a window)",
    )
    parser.add_argument(
        "--blend", choices=("gaussian", "linear"), default="gaussian", help="blend weights"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, metavar="N", help="windows per forward pass"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict-scene`` sub-command."""
    parser = subparsers.add_parser(
        "predict-scene",
        help="mask one large raster (a Sentinel-2 tile) window by window",
        description="Run a model folder over a scene of any size with flat memory: "
        "overlapping windows, blended, post-processed scene-wide, one GeoTIFF mask out.",
        epilog=PREDICT_SCENE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", type=Path, help="model folder (manifest.json + weights)")
    parser.add_argument("scene", type=Path, help="folder of band files or a multi-band raster")
    parser.add_argument("out", type=Path, help="output mask GeoTIFF")
    _add_tiling_arguments(parser)
    parser.add_argument(
        "--bands", metavar="NAMES", help="band names to look for (default: the model's)"
    )
    parser.add_argument(
        "--band-indices",
        type=_int_list,
        metavar="I,J,...",
        help="multi-band file: 1-based index of each band, in the model's band order",
    )
    parser.add_argument(
        "--offset",
        type=_float_list,
        metavar="DN",
        help="DN offset added before prediction, one value or one per band (e.g. -1000 for "
        "baseline >= 04.00; default: from MTD_MSIL2A.xml, else 0)",
    )
    parser.add_argument(
        "--probabilities", type=Path, metavar="FILE", help="also write cloud probabilities"
    )
    parser.add_argument(
        "--probability-dtype",
        choices=("uint8", "float32"),
        default="uint8",
        help="uint8: probability x 254, 255 nodata (default); float32: NaN nodata",
    )
    parser.add_argument("--device", help="cuda, cpu... (default: cuda when available, else cpu)")
    parser.add_argument("--tta", metavar="VIEWS", help="override the manifest's TTA views")
    add_fast_argument(parser)
    parser.add_argument("--restart", action="store_true", help="ignore a killed run's state")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the summary here")
    parser.set_defaults(func=run_predict_scene)


def run_predict_scene(args: argparse.Namespace) -> int:
    """Predict one scene and print a summary; exit 0."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.inference.scene_predict import SceneOptions, predict_scene
    from oncloudn.runtime.atomic import atomic_write_json

    options = SceneOptions(
        window=args.window,
        overlap=args.overlap,
        blend=args.blend,
        batch_size=args.batch_size,
        probabilities=args.probabilities,
        probability_dtype=args.probability_dtype,
        resume=not args.restart,
        progress=not args.no_progress,
        fast=args.fast,
    )
    bands = [name.strip() for name in args.bands.split(",")] if args.bands else None
    offset = args.offset[0] if args.offset and len(args.offset) == 1 else args.offset
    summary = predict_scene(
        args.model_dir,
        args.scene,
        args.out,
        options,
        bands=bands,
        band_indices=args.band_indices,
        offset=offset,
        device=args.device,
        tta=args.tta,
    )
    seconds = ", ".join(f"{key} {value:.1f}" for key, value in summary["seconds"].items())
    print(
        f"{summary['out']}: {summary['height']} x {summary['width']} px, "
        f"{summary['windows_predicted']} windows predicted, "
        f"{summary['windows_skipped_nodata']} all-nodata skipped, "
        f"{summary['rows_resumed']} rows of windows resumed; offsets {summary['offsets']} "
        f"({summary['offset_source']}); {summary['wall_s']:.1f} s ({seconds})"
    )
    if args.json:
        atomic_write_json(args.json, summary)
    return 0


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench scene``."""
    parser = bench_subparsers.add_parser(
        "scene",
        help="mask a generated 10,980 x 10,980 scene: seconds, peak memory, time per stage",
        description="Time predict-scene on a generated Sentinel-2-sized GeoTIFF.",
        epilog=BENCH_SCENE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", type=int, default=10980, help="scene side (default 10980)")
    parser.add_argument(
        "--model",
        type=Path,
        help="model folder (default: a seeded untrained default student U-Net)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "openvino", "onnx", "torch"),
        default="auto",
        help="auto: the fastest installed (OpenVINO, then ONNX Runtime, then torch)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(".bench-scene"),
        help="folder for the generated scene, model and outputs (default .bench-scene)",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--no-jp2", action="store_true", help="skip the JP2 decoding timing")
    _add_tiling_arguments(parser)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.set_defaults(func=run_bench_scene)


def run_bench_scene(args: argparse.Namespace) -> int:
    """Run the scene benchmark and print its figures."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.inference.scene_bench import bench_scene
    from oncloudn.runtime.atomic import atomic_write_json

    result = bench_scene(
        args.work,
        size=args.size,
        model_dir=args.model,
        backend=args.backend,
        threads=args.threads,
        window=args.window,
        overlap=args.overlap,
        blend=args.blend,
        batch_size=args.batch_size,
        jp2=not args.no_jp2,
    )
    stages = ", ".join(f"{key} {value:.1f} s" for key, value in result["seconds"].items())
    print(
        f"bench scene: {result['size']} x {result['size']} px with {result['model']} "
        f"({result['backend']}, {result['threads']} threads): {result['wall_s']:.1f} s, "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB; load average {result['loadavg']}"
    )
    print(f"  stages: {stages}")
    if result.get("jp2_decode_s") is not None:
        print(
            f"  JP2: decoding the 4 bands as JPEG 2000 took {result['jp2_decode_s']:.1f} s "
            f"(not in the total above)"
        )
    if args.json:
        atomic_write_json(args.json, result)
    return 0

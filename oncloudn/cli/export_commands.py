"""``oncloudn export onnx|openvino MODEL_DIR OUT``: exported model folders (library kinds)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from oncloudn.runtime.atomic import atomic_write_json

EXPORT_EPILOG = """\
The source must be a `network` model folder (one torch network: a trained or distilled
student, an smp model). The result is a new model folder of kind `onnx` (ONNX Runtime) or
`openvino` (OpenVINO IR) with the same bands, TTA views, threshold and post-processing;
normalization and the head mapping are inside the graph, batch, height and width are
dynamic. `predict`, `models compare` and `bench predict` run it; `pack` refuses it (the
competition runtime has neither backend).

examples:
  oncloudn export onnx runs/student/fold_0 exported/student-onnx --check data/test_features
  oncloudn export onnx runs/student/fold_0 exported/student-int8 --int8 \\
      --calibration data/train_features --check data/test_features
  oncloudn export openvino runs/student/fold_0 exported/student-ov --check data/test_features
  oncloudn export openvino runs/student/fold_0 exported/student-ov16 --fp16"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="a network model folder")
    parser.add_argument("out", type=Path, metavar="OUT", help="the new model folder")
    parser.add_argument(
        "--check",
        type=Path,
        metavar="FEATURES",
        help="measure parity with the source on this features folder's chips",
    )
    parser.add_argument(
        "--check-chips", type=int, default=8, metavar="N", help="chips to check (default 8)"
    )
    parser.add_argument("--threads", type=int, help="inference threads recorded in the manifest")
    parser.add_argument("--force", action="store_true", help="replace an existing model folder")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report here")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` with its ``onnx`` and ``openvino`` targets."""
    parser = subparsers.add_parser(
        "export",
        help="export a model folder to ONNX (fp32/int8) or OpenVINO IR (FP32/FP16)",
        description="Export a network model folder to another backend, as a model folder.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    onnx = targets.add_parser(
        "onnx",
        help="an `onnx` model folder (ONNX Runtime), fp32 or int8",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(onnx)
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    onnx.add_argument("--int8", action="store_true", help="static int8 quantization")
    onnx.add_argument(
        "--calibration", type=Path, metavar="FEATURES", help="calibration chips (with --int8)"
    )
    onnx.add_argument("--calibration-chips", type=int, default=16, metavar="N", help="default 16")
    onnx.add_argument(
        "--calibration-method",
        choices=["percentile", "minmax"],
        default="percentile",
        help="int8 calibration (default percentile: 99.999th percentile ranges)",
    )
    onnx.set_defaults(func=run_export_onnx)
    openvino = targets.add_parser(
        "openvino",
        help="an `openvino` model folder (IR), FP32 or FP16 weights",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(openvino)
    openvino.add_argument("--fp16", action="store_true", help="store the weights as FP16")
    openvino.set_defaults(func=run_export_openvino)


def _report(result: Any, json_path: Path | None) -> int:
    report = {
        "folder": str(result.folder),
        "files": result.files,
        "size_bytes": result.size_bytes,
        **result.extra,
        "parity": result.parity.to_dict() if result.parity else None,
    }
    print(f"wrote {result.folder} ({', '.join(result.files)}, {result.size_bytes / 2**20:.2f} MiB)")
    if result.parity:
        parity = result.parity
        print(
            f"parity on {parity.n_chips} chips: max |dp| {parity.max_abs_difference:.3g}, mean "
            f"|dp| {parity.mean_abs_difference:.3g}, {parity.differing_mask_pixels} mask pixels "
            f"differ (agreement {parity.mask_agreement:.6f})"
        )
    if json_path:
        atomic_write_json(json_path, report)
    return 0


def run_export_onnx(args: argparse.Namespace) -> int:
    """Export to ONNX and print what was written."""
    # lazy: keeps `oncloudn --help` fast (torch, onnx)
    from oncloudn.export.onnx_export import export_onnx

    result = export_onnx(
        args.model_dir,
        args.out,
        opset=args.opset,
        chips_dir=args.check,
        chips_limit=args.check_chips,
        threads=args.threads,
        force=args.force,
        int8=args.int8,
        calibration_dir=args.calibration,
        calibration_limit=args.calibration_chips,
        calibration_method=args.calibration_method,
    )
    return _report(result, args.json)


def run_export_openvino(args: argparse.Namespace) -> int:
    """Export to OpenVINO IR and print what was written."""
    # lazy: keeps `oncloudn --help` fast (torch, openvino)
    from oncloudn.export.openvino_export import export_openvino

    result = export_openvino(
        args.model_dir,
        args.out,
        fp16=args.fp16,
        chips_dir=args.check,
        chips_limit=args.check_chips,
        threads=args.threads,
        force=args.force,
    )
    return _report(result, args.json)

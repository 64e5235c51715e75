"""``oncloudn export onnx``: a ``network`` model folder -> an ``onnx`` model folder.

The graph (``graph.py``) takes raw DN and returns 2-class logits, with dynamic batch, height
and width (sides must stay multiples of the network's stride; the prediction core pads to
them, recorded as ``options.input_multiple``). The exported folder runs through the
``onnx`` kind (ONNX Runtime) with the source's TTA, threshold and post-processing.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from oncloudn.errors import ConfigError
from oncloudn.export.graph import INPUT_NAME, OUTPUT_NAME, ExportGraph, exportable
from oncloudn.export.graph import exported_manifest as _exported_manifest
from oncloudn.export.parity import Parity, chip_paths, compare_on_chips
from oncloudn.models.folder import load_model_folder, save_model_folder
from oncloudn.runtime.atomic import atomic_path
from oncloudn.runtime.manifest import MANIFEST_NAME

logger = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
DEFAULT_OPSET = 17
# int8 calibration: Percentile kept the held-out Jaccard of both distilled default students
# (-0.0002, +0.0006 against fp32) where MinMax once lost 0.008 (README, "int8").
DEFAULT_CALIBRATION_METHOD = "percentile"
TRACE_SIDE = 64
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes:
        folder: The new model folder.
        files: Its weights files (relative names).
        size_bytes: Their total size.
        parity: Agreement with the source on the chips given (``None`` without chips).
        extra: Backend-specific figures (precision, opset...).
    """

    folder: Path
    files: list[str]
    size_bytes: int
    parity: Parity | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def prepare_out(out: str | os.PathLike, force: bool) -> Path:
    """The output folder, refusing to overwrite a model folder without ``force``.

    Raises:
        FileExistsError: ``out`` holds a model folder and ``force`` is not set.
    """
    out = Path(out)
    if (out / MANIFEST_NAME).exists() and not force:
        raise FileExistsError(f"{out} already holds a model folder; pass --force to replace it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_onnx(model: Any, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Trace ``model`` (a ``CloudModel``) to ``path`` with dynamic batch, height and width."""
    graph = ExportGraph(model)
    side = max(TRACE_SIDE, model.input_multiple)
    example = torch.full((1, len(model.bands), side, side), 1000.0)
    with atomic_path(path) as temp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings of Python-level shape checks
        torch.onnx.export(
            graph,
            (example,),
            str(temp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: DYNAMIC_AXES, OUTPUT_NAME: DYNAMIC_AXES},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def check_parity(
    source: Any, folder: Path, chips_dir: str | os.PathLike | None, limit: int | None
) -> Parity | None:
    """Compare the exported folder with its source on chips (``None`` without a folder)."""
    if chips_dir is None:
        return None
    exported = load_model_folder(folder)
    parity = compare_on_chips(source, exported, chip_paths(chips_dir, limit))
    logger.info("parity on %d chips: %s", parity.n_chips, parity.to_dict())
    return parity


def export_onnx(
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    chips_dir: str | os.PathLike | None = None,
    chips_limit: int | None = 8,
    threads: int | None = None,
    force: bool = False,
    int8: bool = False,
    calibration_dir: str | os.PathLike | None = None,
    calibration_limit: int | None = 16,
    calibration_method: str = DEFAULT_CALIBRATION_METHOD,
) -> ExportResult:
    """Export a ``network`` model folder to an ``onnx`` model folder (fp32, or int8).

    Args:
        model_dir: The source folder.
        out: The new folder (``manifest.json`` + ``model.onnx``).
        opset: ONNX opset.
        chips_dir: A features folder to measure parity on (optional).
        chips_limit: At most this many of its chips.
        threads: ONNX Runtime intra-op threads recorded in the manifest (default: its own).
        force: Replace an existing model folder at ``out``.
        int8: Quantize statically (``quantize.py``), calibrated on ``calibration_dir``.
        calibration_dir: A features folder of calibration chips (required with ``int8``).
        calibration_limit: At most this many calibration chips.
        calibration_method: ``percentile`` (default: kept the held-out Jaccard of the
            distilled student) or ``minmax``.

    Raises:
        ConfigError: Not a ``network`` folder, onnx export is unavailable, or ``int8``
            without calibration chips.
        FileExistsError: ``out`` holds a model folder (without ``force``).
    """
    source = exportable(load_model_folder(model_dir), str(model_dir))
    if int8 and calibration_dir is None:
        raise ConfigError(
            "--int8 needs calibration chips: pass --calibration <root>/<split>_features"
        )
    calibration = chip_paths(calibration_dir, calibration_limit) if int8 else []
    out = prepare_out(out, force)
    try:
        write_onnx(source, out / ONNX_NAME, opset)
    except (ImportError, ModuleNotFoundError) as error:
        raise ConfigError(f"ONNX export needs the onnx package ({error}); {INSTALL}") from None
    extra: dict[str, Any] = {"opset": opset, "precision": "int8" if int8 else "fp32"}
    if int8:
        # lazy: quantize imports onnxruntime's quantization tools only when asked
        from oncloudn.export.quantize import quantize_int8

        with atomic_path(out / ONNX_NAME) as temp:
            quantize_int8(out / ONNX_NAME, temp, calibration, source.bands, calibration_method)
        extra.update(calibration_chips=len(calibration), calibration_method=calibration_method)
    options: dict[str, Any] = {"input_multiple": source.input_multiple, "batch_size": 4}
    if threads:
        options["threads"] = int(threads)
    manifest = _exported_manifest(source.manifest, "onnx", ONNX_NAME, **options)
    manifest.architecture["args"].update(extra)
    if int8:
        manifest.name += "-int8"
    save_model_folder(out, manifest)
    parity = check_parity(source, out, chips_dir, chips_limit)
    size = (out / ONNX_NAME).stat().st_size
    return ExportResult(out, [ONNX_NAME], size, parity, extra)


INSTALL = "pip install 'oncloudn[export]'"

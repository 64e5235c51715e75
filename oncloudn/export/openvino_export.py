"""``oncloudn export openvino``: a ``network`` model folder -> an ``openvino`` model folder.

The network is first exported to ONNX (``onnx_export.py``: raw DN in, 2-class logits out,
dynamic batch and size), then converted with ``openvino.convert_model`` and saved as IR
(``model.xml`` + ``model.bin``), FP32 or with weights compressed to FP16. OpenVINO runs an
FP16 IR on a CPU in float32 arithmetic (weights are decompressed) unless told otherwise;
the kind's ``precision`` option (default ``f32``) sets its inference precision hint.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from oncloudn.errors import ConfigError
from oncloudn.export.graph import exportable, exported_manifest
from oncloudn.export.onnx_export import (
    DEFAULT_OPSET,
    INSTALL,
    ExportResult,
    check_parity,
    prepare_out,
    write_onnx,
)
from oncloudn.models.folder import load_model_folder, save_model_folder

XML_NAME = "model.xml"
BIN_NAME = "model.bin"


def _openvino():
    try:
        # lazy: optional dependency (the export extra)
        import openvino
    except ImportError:
        raise ConfigError(f"OpenVINO export needs the openvino package; {INSTALL}") from None
    return openvino


def export_openvino(
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    fp16: bool = False,
    chips_dir: str | os.PathLike | None = None,
    chips_limit: int | None = 8,
    threads: int | None = None,
    force: bool = False,
) -> ExportResult:
    """Export a ``network`` model folder to an ``openvino`` model folder (IR).

    Args:
        model_dir: The source folder.
        out: The new folder (``manifest.json``, ``model.xml``, ``model.bin``).
        fp16: Store the weights as FP16 (half the file; inference precision stays f32).
        chips_dir: A features folder to measure parity on (optional).
        chips_limit: At most this many of its chips.
        threads: OpenVINO inference threads recorded in the manifest (default: its own).
        force: Replace an existing model folder at ``out``.

    Raises:
        ConfigError: Not a ``network`` folder, or openvino is not installed.
        FileExistsError: ``out`` holds a model folder (without ``force``).
    """
    openvino = _openvino()
    source = exportable(load_model_folder(model_dir), str(model_dir))
    out = prepare_out(out, force)
    with tempfile.TemporaryDirectory() as temp:
        onnx_path = Path(temp) / "model.onnx"
        write_onnx(source, onnx_path, DEFAULT_OPSET)
        converted = openvino.convert_model(str(onnx_path))
    xml_temp = out / f".{XML_NAME}.tmp.xml"
    openvino.save_model(converted, str(xml_temp), compress_to_fp16=fp16)
    os.replace(xml_temp.with_suffix(".bin"), out / BIN_NAME)
    text = xml_temp.read_text(encoding="utf-8")
    xml_temp.unlink()
    (out / XML_NAME).write_text(text, encoding="utf-8")
    options = {"input_multiple": source.input_multiple, "batch_size": 4}
    if threads:
        options["threads"] = int(threads)
    manifest = exported_manifest(source.manifest, "openvino", XML_NAME, **options)
    manifest.architecture["args"]["weights_precision"] = "fp16" if fp16 else "fp32"
    save_model_folder(out, manifest)
    parity = check_parity(source, out, chips_dir, chips_limit)
    size = sum((out / name).stat().st_size for name in (XML_NAME, BIN_NAME))
    extra = {"weights_precision": "fp16" if fp16 else "fp32"}
    return ExportResult(out, [XML_NAME, BIN_NAME], size, parity, extra)

"""int8 ONNX: static quantization with ONNX Runtime, calibrated on chips you pass.

The fp32 graph of ``onnx_export.py`` is pre-processed (shape inference, graph optimization)
and quantized in QDQ form: convolution weights per output channel as int8, activations as
uint8 with ranges calibrated on real raw chips (``MinMax`` or ``Percentile``). Only
convolutions are quantized; normalization, up-sampling, concatenation and the head mapping
stay float. What int8 costs in quality is measured, never assumed: ``parity.py`` compares
the result with the fp32 source, and ``oncloudn score`` scores its masks against labels.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from oncloudn.errors import ConfigError
from oncloudn.export.graph import INPUT_NAME
from oncloudn.export.onnx_export import DEFAULT_CALIBRATION_METHOD, INSTALL
from oncloudn.runtime.chipio import read_bands

CALIBRATION_METHODS = ("percentile", "minmax")


def _quantization():
    try:
        # lazy: optional dependency (onnxruntime's quantization tools)
        from onnxruntime import quantization
    except ImportError:
        raise ConfigError(f"int8 quantization needs onnxruntime; {INSTALL}") from None
    return quantization


class ChipCalibrationReader:
    """Feeds raw chips (float32 ``[1, C, H, W]``) to ONNX Runtime's calibration, one by one.

    Args:
        chips: Chip folders.
        bands: Bands in the model's order.
    """

    def __init__(self, chips: Sequence[str], bands: Sequence[str]):
        self.chips = list(chips)
        self.bands = list(bands)
        self._iterator: Iterator[dict[str, np.ndarray]] = self._feeds()

    def _feeds(self) -> Iterator[dict[str, np.ndarray]]:
        for chip in self.chips:
            raw = read_bands(chip, self.bands).astype(np.float32)[None]
            yield {INPUT_NAME: raw}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = self._feeds()


def quantize_int8(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    chips: Sequence[str],
    bands: Sequence[str],
    method: str = DEFAULT_CALIBRATION_METHOD,
) -> None:
    """Write an int8 (QDQ) copy of an fp32 ONNX graph, calibrated on ``chips``.

    Raises:
        ConfigError: No chips, an unknown method, or onnxruntime missing.
    """
    if not chips:
        raise ConfigError("int8 quantization needs calibration chips (--calibration DIR)")
    if method not in CALIBRATION_METHODS:
        raise ConfigError(
            f"unknown calibration method {method!r}; choose one of: "
            f"{', '.join(CALIBRATION_METHODS)}"
        )
    quantization = _quantization()
    # lazy: part of onnxruntime's optional quantization tools
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as temp:
        prepared = Path(temp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        calibration = (
            quantization.CalibrationMethod.Percentile
            if method == "percentile"
            else quantization.CalibrationMethod.MinMax
        )
        quantization.quantize_static(
            str(prepared),
            str(out_path),
            ChipCalibrationReader(chips, bands),
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=calibration,
        )

"""The ``openvino`` model kind: an OpenVINO compiled model behind the model protocol.

Library-only, like ``onnx`` (``onnx_model.py``), whose model class it reuses: a folder holds
``manifest.json`` and the IR named by ``weights`` (``model.xml``, with ``model.bin`` beside
it), written by ``oncloudn export openvino``. The compiled model is wrapped in the few
methods of an ONNX Runtime session that :class:`~oncloudn.models.onnx_model.OnnxModel` calls
(``run``, ``get_inputs``, ``get_outputs``), so tiling, the class mapping, TTA and
post-processing are the ``onnx`` kind's. Its ``options`` are the ``onnx`` kind's plus:

- ``device``: the OpenVINO device (default ``CPU``);
- ``precision``: the inference precision hint (default ``f32``; ``bf16``/``f16`` where the
  device supports them).

``threads`` sets OpenVINO's inference threads. ``openvino`` is imported only when a folder
is loaded; the competition runtime has no OpenVINO, so ``pack`` refuses this kind.
"""

from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np

from oncloudn.errors import ConfigError
from oncloudn.models.onnx_model import OnnxModel, OnnxOptions, check_session
from oncloudn.runtime import loader
from oncloudn.runtime.manifest import Manifest, path_inside

KIND = "openvino"
REASON = (
    "the competition runtime has no OpenVINO; submit the PyTorch model folder the IR was "
    "exported from"
)
INSTALL_HINT = "pip install 'oncloudn[export]'"
PRECISIONS = ("f32", "bf16", "f16")
BIN_SUFFIX = ".bin"


@dataclasses.dataclass(frozen=True)
class OpenVinoOptions(OnnxOptions):
    """The ``openvino`` kind's manifest ``options``: the ``onnx`` kind's plus these."""

    kind_name: ClassVar[str] = KIND
    device: str = "CPU"
    precision: str = "f32"

    def check(self, source: str) -> None:
        """Raise :class:`ConfigError` for values out of range (named with ``source``)."""
        super().check(source)
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"{source}: options.precision {self.precision!r} must be one of "
                f"{', '.join(PRECISIONS)}"
            )


def _dims(partial_shape: Any) -> list[Any]:
    """A port's shape as onnxruntime gives it: ints, or names for dynamic dimensions."""
    return [
        int(dim.get_length()) if dim.is_static else f"dim{index}"
        for index, dim in enumerate(partial_shape)
    ]


def _ports(ports: Any) -> list[SimpleNamespace]:
    """One entry per name of each port (a port may carry several tensor names; the graph's
    own names, e.g. ``raw``, come before converter-made ones such as ``/Cast_output_0``)."""
    entries = []
    for port in ports:
        shape = _dims(port.get_partial_shape())
        names = sorted(port.get_names(), key=lambda name: (name.startswith("/"), name))
        entries.extend(SimpleNamespace(name=name, shape=shape) for name in names)
    return entries


class OpenVinoSession:
    """An OpenVINO compiled model with the session methods ``OnnxModel`` uses.

    Args:
        compiled: An ``openvino.CompiledModel``.
    """

    def __init__(self, compiled: Any):
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def get_inputs(self) -> list[SimpleNamespace]:
        return _ports(self.compiled.inputs)

    def get_outputs(self) -> list[SimpleNamespace]:
        return _ports(self.compiled.outputs)

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs named ``output_names`` for the inputs ``feeds`` (copies, not views)."""
        results = self.request.infer({name: np.ascontiguousarray(x) for name, x in feeds.items()})
        return [np.array(results[self.compiled.output(name)]) for name in output_names]


def _compile(path: str, options: OpenVinoOptions, folder: str) -> Any:
    try:
        # lazy: optional dependency (the export extra)
        import openvino
    except ImportError:
        raise ConfigError(
            f"{folder}: model kind 'openvino' needs openvino, which is not installed; "
            f"{INSTALL_HINT}"
        ) from None
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": options.precision}
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = int(options.threads)
    core = openvino.Core()
    return core.compile_model(core.read_model(path), options.device, config)


def load_openvino(folder: str, manifest: Manifest, device: str = "cpu") -> OnnxModel:
    """``kind: openvino``: ``<folder>/<manifest.weights>`` (IR) compiled by OpenVINO.

    Raises:
        ConfigError: No ``.xml`` named, openvino missing, or options that do not fit.
        FileNotFoundError: The IR (or its ``.bin``) is absent.
    """
    source = os.path.join(folder, "manifest.json")
    if not manifest.weights or not manifest.weights.endswith(".xml"):
        raise ConfigError(f"{source}: an 'openvino' manifest must name its .xml IR in 'weights'")
    try:
        path = path_inside(folder, manifest.weights, "weights")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    bin_path = os.path.splitext(path)[0] + BIN_SUFFIX
    try:  # the .bin beside the .xml: a link out of the folder is refused too
        path_inside(folder, os.path.relpath(bin_path, folder), "weights (.bin)")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    for needed in (path, bin_path):
        if not os.path.isfile(needed):
            raise FileNotFoundError(f"{folder}: OpenVINO file {needed} is missing")
    options = OpenVinoOptions.from_manifest(manifest, source)
    session = OpenVinoSession(_compile(path, options, folder))
    model = OnnxModel(session, manifest, options)
    check_session(session, model, folder)
    return model


def count_openvino_parameters(path: str | os.PathLike) -> int | None:
    """Number of values in an IR's floating-point constants (``None`` without openvino)."""
    try:
        # lazy: optional dependency (the export extra)
        import openvino
    except ImportError:
        return None
    model = openvino.Core().read_model(os.fspath(path))
    total = 0
    for op in model.get_ops():
        if op.get_type_name() == "Constant" and op.get_output_element_type(0).is_real():
            total += int(np.prod(list(op.get_output_shape(0)), dtype=np.int64))
    return total


def register() -> loader.ModelKind:
    """Register the ``openvino`` kind (again, if a test swapped the registry); returns it."""
    current = loader.KINDS.get(KIND)
    if current is not None and current.load is load_openvino:
        return current
    return loader.register_kind(
        KIND,
        load_openvino,
        runtime=False,
        reason=REASON,
        options=[field.name for field in dataclasses.fields(OpenVinoOptions)],
        replace=True,
    )


register()

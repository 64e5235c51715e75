"""The ``onnx`` model kind: an ONNX Runtime session behind the model protocol (library-only).

A model folder of kind ``onnx`` holds ``manifest.json`` and the ``.onnx`` file named by the
manifest's ``weights`` (so copying, ensembles and ``pack``'s checks treat it like any weights
file). The manifest's ``normalization`` is applied to raw DN before the session (e.g.
``dataset`` with per-band ``mean``/``std`` in reflectance units, see
``oncloudn/runtime/normalize.py``). Its ``options`` (all optional, see :class:`OnnxOptions`):

- ``input_name`` / ``output_name``: the graph's input and output (default: the first ones);
- ``tile_size`` / ``tile_stride``: tiles fed to the session (``None``: whole inputs); any
  ``H x W`` is covered, short sides padded by reflection, overlaps averaged
  (``oncloudn/models/tiling.py``); ``tile_stride`` defaults to ``tile_size`` (no overlap);
- ``batch_size``: tiles per session call; ``input_multiple``: without tiling, the side
  multiple the graph needs (the prediction core pads to it);
- ``output_type``: ``logits`` (softmax over the K channels; sigmoid for one channel) or
  ``probabilities``;
- ``cloud_channels`` / ``clear_channels``: output channels that are cloud and clear (default
  ``[1]`` and every other channel). The 2-class logits are ``[log P(clear), log P(cloud)]``
  with the probabilities of each group summed, i.e. ``[logsumexp(non-cloud), cloud]`` for
  logits (docs/architecture.md); channels in neither group are left out and the two groups
  renormalized;
- ``threads``: ONNX Runtime's intra-op threads (default: its own choice).

The session runs on CPU whatever the device; inputs and outputs stay torch tensors on the
caller's device. The competition runtime has no onnxruntime, so ``pack`` refuses this kind.
``onnxruntime`` is imported only when a folder is loaded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, ClassVar

import numpy as np
import torch

from oncloudn.errors import ConfigError
from oncloudn.models.tiling import predict_tiled
from oncloudn.runtime import loader
from oncloudn.runtime.manifest import Manifest, path_inside
from oncloudn.runtime.models import PredictableModel
from oncloudn.runtime.normalize import normalize_input

logger = logging.getLogger(__name__)

KIND = "onnx"
REASON = (
    "the competition runtime has no onnxruntime; distill the ONNX model into a PyTorch "
    "student (`oncloudn distill`) to submit it"
)
INSTALL_HINT = "pip install 'oncloudn[teachers]'"
OUTPUT_TYPES = ("logits", "probabilities")
_TINY = 1e-30


@dataclasses.dataclass(frozen=True)
class OnnxOptions:
    """The ``onnx`` kind's manifest ``options`` (see the module docstring)."""

    kind_name: ClassVar[str] = KIND
    input_name: str | None = None
    output_name: str | None = None
    tile_size: int | None = None
    tile_stride: int | None = None
    batch_size: int = 4
    input_multiple: int = 1
    output_type: str = "logits"
    cloud_channels: tuple[int, ...] = (1,)
    clear_channels: tuple[int, ...] | None = None
    threads: int | None = None

    @classmethod
    def from_manifest(cls, manifest: Manifest, source: str = "manifest") -> OnnxOptions:
        """Parse and check a manifest's ``options``.

        Raises:
            ConfigError: An unknown option or a value of the wrong type or range.
        """
        names = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(manifest.options) - set(names))
        if unknown:
            raise ConfigError(
                f"{source}: kind {cls.kind_name!r} does not take options {unknown}; valid: "
                f"{', '.join(names)}"
            )
        values = dict(manifest.options)
        for key in ("cloud_channels", "clear_channels"):
            if values.get(key) is not None:
                values[key] = tuple(int(channel) for channel in values[key])
        options = cls(**values)
        options.check(source)
        return options

    def check(self, source: str) -> None:
        """Raise :class:`ConfigError` for values out of range (named with ``source``)."""
        if self.output_type not in OUTPUT_TYPES:
            raise ConfigError(
                f"{source}: options.output_type {self.output_type!r} must be one of "
                f"{', '.join(OUTPUT_TYPES)}"
            )
        for key in ("tile_size", "tile_stride", "threads"):
            value = getattr(self, key)
            if value is not None and int(value) < 1:
                raise ConfigError(f"{source}: options.{key} must be >= 1 or null, got {value}")
        if self.batch_size < 1 or self.input_multiple < 1:
            raise ConfigError(f"{source}: options.batch_size and input_multiple must be >= 1")
        if self.tile_stride is not None and self.tile_size is None:
            raise ConfigError(f"{source}: options.tile_stride needs a tile_size")
        if self.tile_size and self.tile_stride and self.tile_stride > self.tile_size:
            raise ConfigError(
                f"{source}: options.tile_stride {self.tile_stride} exceeds tile_size "
                f"{self.tile_size}; pixels would be skipped"
            )
        if not self.cloud_channels or set(self.cloud_channels) & set(self.clear_channels or ()):
            raise ConfigError(
                f"{source}: options.cloud_channels {list(self.cloud_channels)} must be "
                "non-empty and disjoint from clear_channels"
            )


def two_class_probabilities(output: np.ndarray, options: OnnxOptions) -> np.ndarray:
    """``[N, 2, h, w]`` (clear, cloud) probabilities of a session output ``[N, K, h, w]``.

    Raises:
        ValueError: A channel of the mapping out of range for ``K``.
    """
    output = output.astype(np.float32, copy=False)
    channels = output.shape[1]
    if channels == 1:
        score = output[:, 0]
        cloud = 1.0 / (1.0 + np.exp(-score)) if options.output_type == "logits" else score
        return np.stack([1.0 - cloud, cloud], axis=1)
    cloud_index = list(options.cloud_channels)
    clear_index = list(
        options.clear_channels or [c for c in range(channels) if c not in cloud_index]
    )
    if max(cloud_index + clear_index) >= channels or min(cloud_index + clear_index) < 0:
        raise ValueError(
            f"class mapping cloud {cloud_index} / clear {clear_index} is out of range for a "
            f"{channels}-channel output"
        )
    probability = output
    if options.output_type == "logits":
        shifted = np.exp(output - output.max(axis=1, keepdims=True))
        probability = shifted / shifted.sum(axis=1, keepdims=True)
    pair = np.stack(
        [probability[:, clear_index].sum(axis=1), probability[:, cloud_index].sum(axis=1)], axis=1
    )
    return pair / np.maximum(pair.sum(axis=1, keepdims=True), _TINY)


class OnnxModel(PredictableModel):
    """An ONNX Runtime session as a model of the protocol (not an ``nn.Module``).

    Args:
        session: An ``onnxruntime.InferenceSession`` (anything with ``run``,
            ``get_inputs`` and ``get_outputs``).
        manifest: Its ``kind: onnx`` manifest (bands, normalization, options).
        options: Parsed options (default: from the manifest).
    """

    def __init__(self, session: Any, manifest: Manifest, options: OnnxOptions | None = None):
        super().__init__(manifest.bands, manifest)
        self.session = session
        self.options = options or OnnxOptions.from_manifest(manifest)
        self.input_name = self.options.input_name or session.get_inputs()[0].name
        self.output_name = self.options.output_name or session.get_outputs()[0].name
        self.input_multiple = 1 if self.options.tile_size else self.options.input_multiple
        self.normalization = dict(manifest.normalization or {"name": "raw"})
        self.fixed_batch = _fixed_batch(session, self.input_name)
        self.batch_size = self.fixed_batch or self.options.batch_size

    def _run(self, batch: np.ndarray) -> np.ndarray:
        count = len(batch)
        if self.fixed_batch and count < self.fixed_batch:  # a graph exported for batch B
            batch = np.concatenate([batch, np.repeat(batch[-1:], self.fixed_batch - count, 0)])
        output = self.session.run([self.output_name], {self.input_name: batch})[0]
        return two_class_probabilities(np.asarray(output)[:count], self.options)

    def probabilities(self, raw: torch.Tensor) -> torch.Tensor:
        """Clear and cloud probabilities ``[N, 2, H, W]`` of raw DN ``[N, C, H, W]``."""
        x = normalize_input(raw, self.bands, self.normalization)
        array = x.detach().cpu().numpy().astype(np.float32, copy=False)
        pair = predict_tiled(
            self._run, array, self.options.tile_size, self.options.tile_stride, self.batch_size
        )
        return torch.from_numpy(np.ascontiguousarray(pair)).to(raw.device)

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        """2-class logits ``[log P(clear), log P(cloud)]`` ``[N, 2, H, W]`` of raw DN."""
        return torch.log(self.probabilities(raw).clamp(min=_TINY))


def _fixed_batch(session: Any, input_name: str) -> int | None:
    """The batch size a graph was exported with, or ``None`` when it is dynamic."""
    for node in session.get_inputs():
        if node.name == input_name and node.shape and isinstance(node.shape[0], int):
            return int(node.shape[0])
    return None


def _session(path: str, threads: int | None, folder: str) -> Any:
    try:
        # lazy: optional dependency (the teachers extra)
        import onnxruntime
    except ImportError:
        raise ConfigError(
            f"{folder}: model kind 'onnx' needs onnxruntime, which is not installed; {INSTALL_HINT}"
        ) from None
    session_options = onnxruntime.SessionOptions()
    if threads:
        session_options.intra_op_num_threads = int(threads)
        session_options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        path, sess_options=session_options, providers=["CPUExecutionProvider"]
    )


def check_session(session: Any, model: OnnxModel, folder: str) -> None:
    """Check that a session's graph fits the model's options (the onnx and openvino kinds).

    Raises:
        ConfigError: The named input/output is missing, the channel count differs from the
            manifest's bands, or a fixed input size differs from ``options.tile_size``.
    """
    inputs = {node.name: node for node in session.get_inputs()}
    outputs = [node.name for node in session.get_outputs()]
    if model.input_name not in inputs or model.output_name not in outputs:
        raise ConfigError(
            f"{folder}: the ONNX graph has inputs {sorted(inputs)} and outputs {outputs}; "
            f"options name input {model.input_name!r} and output {model.output_name!r}"
        )
    shape = list(inputs[model.input_name].shape)
    if len(shape) == 4 and isinstance(shape[1], int) and shape[1] != len(model.bands):
        raise ConfigError(
            f"{folder}: the ONNX input takes {shape[1]} channels but the manifest lists "
            f"{len(model.bands)} bands {model.bands}"
        )
    fixed = [side for side in shape[2:] if isinstance(side, int)]
    if fixed and any(side != model.options.tile_size for side in fixed):
        raise ConfigError(
            f"{folder}: the ONNX input has a fixed size {shape[2:]}; set options.tile_size to "
            f"{fixed[0]} (now {model.options.tile_size})"
        )


def load_onnx(folder: str, manifest: Manifest, device: str = "cpu") -> OnnxModel:
    """``kind: onnx``: ``<folder>/<manifest.weights>`` in an ONNX Runtime CPU session.

    Raises:
        ConfigError: No ``.onnx`` file named, onnxruntime missing, or options that do not fit
            the graph.
        FileNotFoundError: The named file is absent.
    """
    source = os.path.join(folder, "manifest.json")
    if not manifest.weights:
        raise ConfigError(f"{source}: an 'onnx' manifest must name its .onnx file in 'weights'")
    try:
        path = path_inside(folder, manifest.weights, "weights")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder}: ONNX file {path} named in the manifest is missing")
    options = OnnxOptions.from_manifest(manifest, source)
    session = _session(path, options.threads, folder)
    model = OnnxModel(session, manifest, options)
    check_session(session, model, folder)
    return model


def count_onnx_parameters(path: str | os.PathLike) -> int | None:
    """Number of values in an ONNX file's initializers (``None`` without the ``onnx`` package)."""
    try:
        # lazy: optional dependency (the teachers extra)
        import onnx
    except ImportError:
        return None
    graph = onnx.load(os.fspath(path), load_external_data=False).graph
    return int(sum(int(np.prod(tensor.dims)) for tensor in graph.initializer))


def register() -> loader.ModelKind:
    """Register the ``onnx`` kind (again, if a test swapped the registry); returns it."""
    current = loader.KINDS.get(KIND)
    if current is not None and current.load is load_onnx:
        return current
    return loader.register_kind(
        KIND,
        load_onnx,
        runtime=False,
        reason=REASON,
        options=[field.name for field in dataclasses.fields(OnnxOptions)],
        replace=True,
    )


def onnx_options(**values: Any) -> dict[str, Any]:
    """A checked ``options`` dict for an ``onnx`` manifest (unset fields left out).

    Raises:
        ConfigError: Unknown names or bad values.
    """
    options = OnnxOptions.from_manifest(Manifest(kind=KIND, options=dict(values)), "options")
    checked = dataclasses.asdict(options)
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in checked.items()
        if key in values
    }


register()

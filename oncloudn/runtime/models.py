"""The model protocol and the runtime's own models (runtime-safe).

Every model, whatever backs it (a torch network, a rule, an ONNX Runtime session), follows
the small protocol of :class:`PredictableModel`, which is *not* an ``nn.Module``:

- ``bands``: input band names in channel order; ``manifest``: the manifest it was built
  from (given at construction, never ``None``);
- ``logits(raw)`` (also ``model(raw)``): 2-class logits ``[N, 2, H, W]`` (clear, cloud) of
  raw DN ``[N, C, H, W]`` in ``bands`` order; the model normalizes its input itself;
- ``predict_proba(raw, views=None, merge=None)``: cloud probability ``[N, H, W]`` after
  test-time augmentation (the manifest's ``tta`` views merged by ``tta_merge`` unless given);
- ``to(device)`` and ``eval()`` return the model (no-ops for models holding no torch module).

Inputs and outputs are torch tensors on the caller's device. Models here:

- :class:`CloudModel`: a network + normalization + head mapping (``kind: network``); also an
  ``nn.Module``, so that training can optimize it.
- :class:`ThresholdModel`: the classic Sentinel-2 rule of ``threshold.py``, no weights
  (``kind: threshold``).
- :class:`EnsembleModel`: weighted mean of its members' probabilities (``kind: ensemble``);
  members may be any models of the protocol.
"""

import functools
import math
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn

from .bands import BANDS
from .heads import check_head_activation, head_channels, head_to_logits, probability_to_logits
from .manifest import Manifest
from .networks import build_network, load_network_state, network_stride
from .normalize import normalize_input
from .threshold import THRESHOLD_BANDS, threshold_cloud_score, threshold_params
from .tta import predict_with_tta, resolve_views


class PredictableModel:
    """The protocol every model kind follows (a plain class: subclass it or mimic it).

    Args:
        bands: Input band names in channel order.
        manifest: The manifest the model is built from.

    Attributes:
        input_multiple: Input height and width must be multiples of this (the prediction
            core pads to it); 1 for pixel-wise models.
    """

    input_multiple = 1

    def __init__(self, bands: Sequence[str], manifest: Manifest):
        self.bands = list(bands)
        self.manifest = manifest

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        """2-class logits ``[N, 2, H, W]`` (clear, cloud) of raw DN ``[N, C, H, W]``."""
        raise NotImplementedError(f"{type(self).__name__} must define logits(raw) -> [N, 2, H, W]")

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return self.logits(raw)

    def to(self, device: Any) -> "PredictableModel":
        """Move the model to ``device`` (nothing to move here); returns the model."""
        return self

    def eval(self) -> "PredictableModel":
        """Switch to inference mode (nothing to switch here); returns the model."""
        return self

    def tta_settings(
        self, views: Optional[Sequence[str]] = None, merge: Optional[str] = None
    ) -> tuple[list[str], str]:
        """TTA views and merge to run: the given ones, else the manifest's."""
        resolved = resolve_views(views if views is not None else self.manifest.tta)
        return resolved, merge or self.manifest.tta_merge

    def predict_proba(
        self,
        raw: torch.Tensor,
        views: Optional[Sequence[str]] = None,
        merge: Optional[str] = None,
    ) -> torch.Tensor:
        """Cloud probability ``[N, H, W]`` of raw DN ``[N, C, H, W]`` after TTA.

        Args:
            raw: Raw DN in ``self.bands`` order (any float or integer tensor).
            views: TTA views overriding the manifest's (e.g. fewer under a time budget).
            merge: ``probability`` or ``logit``, overriding the manifest's.
        """
        views, merge = self.tta_settings(views, merge)
        with torch.no_grad():
            return predict_with_tta(self.logits, raw, views, merge)


class CloudModel(nn.Module, PredictableModel):
    """A network with its normalization and head mapping (an ``nn.Module`` for training).

    Args:
        network: Maps normalized input ``[N, C, H, W]`` to raw outputs ``[N, K, H, W]``.
        manifest: Its ``kind: network`` manifest: ``bands``, ``normalization``
            (see ``normalize.py``) and ``head`` (see ``heads.py``) are used here.

    Raises:
        ValueError: An unknown head activation.
    """

    def __init__(self, network: nn.Module, manifest: Manifest):
        nn.Module.__init__(self)
        PredictableModel.__init__(self, manifest.bands, manifest)
        self.network = network
        self.input_multiple = network_stride(network)
        self.normalization = dict(manifest.normalization or {"name": "raw"})
        self.head = dict(manifest.head or {})
        check_head_activation(self.head)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """2-class logits ``[N, 2, H, W]`` of raw DN ``[N, C, H, W]``."""
        x = normalize_input(raw, self.bands, self.normalization)
        return head_to_logits(self.network(x), self.head)

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        """2-class logits ``[N, 2, H, W]`` of raw DN (the module's forward pass)."""
        return self.forward(raw)

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, state_dict: Optional[dict[str, torch.Tensor]] = None
    ) -> "CloudModel":
        """Build the network a ``kind: network`` manifest describes, optionally with weights.

        Raises:
            ValueError: Unknown network, bad arguments, or weights that do not fit.
        """
        architecture = manifest.architecture or {}
        network = build_network(
            architecture.get("name", "unet"),
            architecture.get("args", {}),
            len(manifest.bands),
            head_channels(manifest.head),
        )
        if state_dict is not None:
            load_network_state(network, state_dict, manifest.name)
        return cls(network, manifest)


def threshold_manifest(params: Optional[dict[str, Any]] = None, **fields: Any) -> Manifest:
    """A ``kind: threshold`` manifest for the classic rule (threshold 0.5, no TTA).

    Args:
        params: Overrides of ``threshold.THRESHOLD_DEFAULTS`` (the manifest's
            ``architecture.args``).
        **fields: Other manifest fields (``name``, ``bands``, ``threshold``...).

    Raises:
        ValueError: Unknown rule parameters.
    """
    threshold_params(params)
    values: dict[str, Any] = {
        "name": "threshold-rule",
        "kind": "threshold",
        "architecture": {"name": "threshold", "args": dict(params or {})},
        "bands": list(THRESHOLD_BANDS),
        "normalization": {"name": "raw", "params": {}},
        "weights": None,
        "tta": ["identity"],
        "threshold": 0.5,
    }
    values.update(fields)
    return Manifest(**values)


class ThresholdModel(PredictableModel):
    """The classic Sentinel-2 thresholding rule as a model (no weights, no torch module).

    Its score is per pixel, so it is TTA-invariant: ``predict_proba`` ignores views.

    Args:
        params: Overrides of ``threshold.THRESHOLD_DEFAULTS``.
        bands: Input band names in channel order; must include B02, B03, B04 and B08.
        manifest: Its manifest (default: ``threshold_manifest(params, bands=bands)``).

    Raises:
        ValueError: A band the rule needs is absent, or unknown parameters.
    """

    def __init__(
        self,
        params: Optional[dict[str, Any]] = None,
        bands: Sequence[str] = THRESHOLD_BANDS,
        manifest: Optional[Manifest] = None,
    ):
        manifest = manifest or threshold_manifest(params, bands=list(bands))
        super().__init__(bands, manifest)
        self.params = threshold_params(params)
        missing = [band for band in THRESHOLD_BANDS if band not in self.bands]
        if missing:
            raise ValueError(
                "the threshold rule needs bands {}; the manifest's bands {} lack {}".format(
                    ", ".join(THRESHOLD_BANDS), self.bands, ", ".join(missing)
                )
            )
        self.indices = [self.bands.index(band) for band in THRESHOLD_BANDS]

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "ThresholdModel":
        """The rule a ``kind: threshold`` manifest describes (its ``architecture.args``)."""
        return cls((manifest.architecture or {}).get("args"), manifest.bands, manifest)

    def score(self, raw: torch.Tensor) -> torch.Tensor:
        """Cloud score ``[N, H, W]`` in ``[0, 1]``."""
        return threshold_cloud_score(raw[:, self.indices].float(), self.params)

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        """2-class logits whose softmax is the rule's score."""
        return probability_to_logits(self.score(raw))

    def predict_proba(
        self,
        raw: torch.Tensor,
        views: Optional[Sequence[str]] = None,
        merge: Optional[str] = None,
    ) -> torch.Tensor:
        """The rule's score ``[N, H, W]`` (views and merge are irrelevant for a pixel rule)."""
        with torch.no_grad():
            return self.score(raw)


def threshold_model(params: Optional[dict[str, Any]] = None) -> ThresholdModel:
    """The classic rule as a ready model (used when a model folder cannot be loaded)."""
    return ThresholdModel(params)


def ensemble_manifest(
    bands: Sequence[str] = BANDS, members: Sequence[dict[str, Any]] = (), **fields: Any
) -> Manifest:
    """A ``kind: ensemble`` manifest (no weights of its own).

    Args:
        bands: The ensemble's input bands (the union of its members').
        members: ``[{"path": "<sub-folder>", "weight": w}, ...]``.
        **fields: Other manifest fields (``name``, ``threshold``, ``tta``...).
    """
    values: dict[str, Any] = {
        "name": "ensemble",
        "kind": "ensemble",
        "architecture": {"name": "ensemble", "args": {}},
        "bands": list(bands),
        "normalization": {"name": "raw", "params": {}},
        "weights": None,
        "members": [dict(member) for member in members],
    }
    values.update(fields)
    return Manifest(**values)


class EnsembleModel(PredictableModel):
    """Weighted mean of the members' cloud probabilities.

    Each member runs with the ensemble's TTA views (``predict_proba``), on the channels of
    its own bands picked by name from the ensemble's input. Members may be of any kind.

    Args:
        members: Models of the protocol, each with ``bands``.
        weights: One non-negative weight per member (normalized to sum 1).
        bands: The ensemble's input bands (default: the manifest's, else the first
            member's); every member's bands must be among them.
        manifest: Its manifest (default: ``ensemble_manifest(bands)``).

    Raises:
        ValueError: No members, bad weights, or a member band absent from ``bands``.
    """

    def __init__(
        self,
        members: Sequence[PredictableModel],
        weights: Optional[Sequence[float]] = None,
        bands: Optional[Sequence[str]] = None,
        manifest: Optional[Manifest] = None,
    ):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if bands is None:
            bands = manifest.bands if manifest is not None else members[0].bands
        super().__init__(bands, manifest or ensemble_manifest(bands))
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"ensemble weights {weights} must be {len(members)} non-negative numbers "
                "with a positive sum"
            )
        self.members = list(members)
        multiples = [int(getattr(member, "input_multiple", 1) or 1) for member in members]
        self.input_multiple = functools.reduce(math.lcm, multiples, 1)
        self.weights = [w / sum(weights) for w in weights]
        self.member_indices = [self._indices(index, m) for index, m in enumerate(members)]

    def _indices(self, index: int, member: PredictableModel) -> list[int]:
        missing = [band for band in member.bands if band not in self.bands]
        if missing:
            raise ValueError(
                f"ensemble member {index} needs bands {missing} absent from the "
                f"ensemble's bands {self.bands}; list every member band in the ensemble "
                "manifest"
            )
        return [self.bands.index(band) for band in member.bands]

    def to(self, device: Any) -> "EnsembleModel":
        """Move every member to ``device``; returns the ensemble."""
        self.members = [member.to(device) for member in self.members]
        return self

    def eval(self) -> "EnsembleModel":
        """Put every member in inference mode; returns the ensemble."""
        self.members = [member.eval() for member in self.members]
        return self

    def _member_input(self, raw: torch.Tensor, index: int) -> torch.Tensor:
        indices = self.member_indices[index]
        if indices == list(range(raw.shape[1])):
            return raw
        return raw[:, indices]

    def predict_proba(
        self,
        raw: torch.Tensor,
        views: Optional[Sequence[str]] = None,
        merge: Optional[str] = None,
    ) -> torch.Tensor:
        """Weighted mean over members of their probability under the ensemble's TTA."""
        views, merge = self.tta_settings(views, merge)
        total = None
        with torch.no_grad():
            for index, (member, weight) in enumerate(zip(self.members, self.weights)):
                if weight == 0:
                    continue
                proba = member.predict_proba(self._member_input(raw, index), views, merge)
                total = proba * weight if total is None else total + proba * weight
        return total

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        """2-class logits of the weighted mean probability (identity view only)."""
        return probability_to_logits(self.predict_proba(raw, ["identity"]))

"""Model wrappers and the model-folder loader (runtime-safe).

Every model here takes raw DN ``[N, C, H, W]`` (float tensor of DN values, in its manifest's
band order), normalizes itself, and returns 2-class logits ``[N, 2, H, W]`` (clear, cloud)
from ``forward``; ``predict_proba(raw)`` returns the cloud probability ``[N, H, W]`` after
test-time augmentation (the manifest's ``tta`` views merged by ``tta_merge``).

- :class:`CloudModel`: a network + normalization + head mapping (``kind: network``).
- :class:`ThresholdModel`: the classic Sentinel-2 rule of ``threshold.py``, no weights
  (``kind: threshold``).
- :class:`EnsembleModel`: weighted mean of its members' probabilities (``kind: ensemble``).

``load_model(folder, device)`` builds any of them from a model folder.
"""

import functools
import logging
import math
import os
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn

from .manifest import Manifest, read_manifest
from .networks import build_network, network_stride
from .normalize import normalize
from .threshold import THRESHOLD_BANDS, threshold_cloud_score, threshold_params
from .tta import TTA_MERGES, predict_with_tta, resolve_views

LOGGER = logging.getLogger(__name__)

HEAD_ACTIVATIONS = ("sigmoid", "softmax")
_LOG_EPS = 1e-6


def head_channels(head: dict[str, Any]) -> int:
    """Output channels a head expects (``head["channels"]``, default 1)."""
    return int(head.get("channels", 1))


def head_to_logits(output: torch.Tensor, head: dict[str, Any]) -> torch.Tensor:
    """Map a network's raw output ``[N, K, H, W]`` to 2-class logits ``[N, 2, H, W]``.

    - ``sigmoid``: channel ``positive_index`` (default 0) is the cloud logit z -> ``[0, z]``.
    - ``softmax`` with 2 channels: ``[other, positive]`` (``positive_index`` default 1).
    - ``softmax`` with K > 2 channels: ``[logsumexp(non-cloud channels), cloud]``.

    Raises:
        ValueError: Unknown activation, a positive index out of range, or a 1-channel softmax.
    """
    activation = head.get("activation", "sigmoid")
    channels = int(output.shape[1])
    if activation not in HEAD_ACTIVATIONS:
        raise ValueError(
            "unknown head activation {!r}; choose one of: {}".format(
                activation, ", ".join(HEAD_ACTIVATIONS)
            )
        )
    default_index = 0 if activation == "sigmoid" or channels == 1 else 1
    positive = int(head.get("positive_index", default_index))
    if not 0 <= positive < channels:
        raise ValueError(
            f"head positive_index {positive} is out of range for a {channels}-channel output"
        )
    cloud = output[:, positive : positive + 1]
    if activation == "sigmoid":
        return torch.cat([torch.zeros_like(cloud), cloud], dim=1)
    if channels < 2:
        raise ValueError("a softmax head needs 2 or more channels; use 'sigmoid' for one")
    others = [output[:, i : i + 1] for i in range(channels) if i != positive]
    if len(others) == 1:
        clear = others[0]
    else:
        clear = torch.logsumexp(torch.cat(others, dim=1), dim=1, keepdim=True)
    return torch.cat([clear, cloud], dim=1)


def probability_to_logits(probability: torch.Tensor) -> torch.Tensor:
    """2-class logits ``[N, 2, H, W]`` whose softmax gives back ``probability`` ``[N, H, W]``."""
    p = probability.float().clamp(_LOG_EPS, 1.0 - _LOG_EPS).unsqueeze(1)
    return torch.cat([torch.log1p(-p), torch.log(p)], dim=1)


class PredictableModel(nn.Module):
    """Base of the runtime's models: ``forward`` gives logits, ``predict_proba`` probabilities.

    Attributes:
        bands: Input band names in channel order.
        manifest: The manifest the model was built from (``None`` when built by hand).
    """

    def __init__(self, bands: Sequence[str]):
        super().__init__()
        self.bands = list(bands)
        self.manifest: Optional[Manifest] = None

    def default_views(self) -> list[str]:
        """TTA views of the manifest (identity without one)."""
        return resolve_views(self.manifest.tta if self.manifest is not None else None)

    def default_merge(self) -> str:
        """TTA merge of the manifest (``probability`` without one)."""
        return self.manifest.tta_merge if self.manifest is not None else "probability"

    def tta_settings(
        self, views: Optional[Sequence[str]] = None, merge: Optional[str] = None
    ) -> tuple[list[str], str]:
        """TTA views and merge to run: the given ones, else the manifest's."""
        views = resolve_views(views) if views is not None else self.default_views()
        return views, merge or self.default_merge()

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
            return predict_with_tta(self.forward, raw, views, merge)


class CloudModel(PredictableModel):
    """A network with its normalization and head mapping.

    Args:
        network: Maps normalized input ``[N, C, H, W]`` to raw outputs ``[N, K, H, W]``.
        bands: Input band names in channel order.
        normalization: ``{"name": ..., "params": {...}}`` (see ``normalize.py``).
        head: ``{"activation": "sigmoid" | "softmax", "channels": K, "positive_index": i}``.
    """

    def __init__(
        self,
        network: nn.Module,
        bands: Sequence[str],
        normalization: dict[str, Any],
        head: dict[str, Any],
    ):
        super().__init__(bands)
        self.network = network
        self.input_multiple = network_stride(network)
        self.normalization = dict(normalization or {"name": "raw"})
        self.head = dict(head or {})
        if self.head.get("activation", "sigmoid") not in HEAD_ACTIVATIONS:
            raise ValueError(
                "unknown head activation {!r}; choose one of: {}".format(
                    self.head.get("activation"), ", ".join(HEAD_ACTIVATIONS)
                )
            )

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """2-class logits ``[N, 2, H, W]`` of raw DN ``[N, C, H, W]``."""
        if raw.dim() != 4 or raw.shape[1] != len(self.bands):
            raise ValueError(
                "expected raw DN [N, {}, H, W] in band order {}, got shape {}".format(
                    len(self.bands), ", ".join(self.bands), tuple(raw.shape)
                )
            )
        x = normalize(
            raw.float(), self.normalization.get("name", "raw"), self.normalization.get("params")
        )
        return head_to_logits(self.network(x), self.head)

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
        model = cls(network, manifest.bands, manifest.normalization, manifest.head)
        model.manifest = manifest
        return model


def load_network_state(network: nn.Module, state_dict: dict[str, Any], name: str) -> None:
    """Load a network's plain state dict (a ``module.`` or ``network.`` prefix is tolerated).

    Raises:
        ValueError: The weights do not match the architecture.
    """
    for prefix in ("module.", "network."):
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
    try:
        network.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(
            f"model {name!r}: weights do not match the manifest's architecture "
            f"({str(error).splitlines()[0]}); save the network's state_dict (not the "
            "wrapper's) with the architecture it was trained with"
        ) from None


class ThresholdModel(PredictableModel):
    """The classic Sentinel-2 thresholding rule as a model (no weights).

    Its score is per pixel, so it is TTA-invariant: ``predict_proba`` ignores views.

    Args:
        params: Overrides of ``threshold.THRESHOLD_DEFAULTS``.
        bands: Input band names in channel order; must include B02, B03, B04 and B08.

    Raises:
        ValueError: A band the rule needs is absent, or unknown parameters.
    """

    def __init__(
        self, params: Optional[dict[str, Any]] = None, bands: Sequence[str] = THRESHOLD_BANDS
    ):
        super().__init__(bands)
        self.params = threshold_params(params)
        missing = [band for band in THRESHOLD_BANDS if band not in self.bands]
        if missing:
            raise ValueError(
                "the threshold rule needs bands {}; the manifest's bands {} lack {}".format(
                    ", ".join(THRESHOLD_BANDS), self.bands, ", ".join(missing)
                )
            )
        self.indices = [self.bands.index(band) for band in THRESHOLD_BANDS]

    def score(self, raw: torch.Tensor) -> torch.Tensor:
        """Cloud score ``[N, H, W]`` in ``[0, 1]``."""
        return threshold_cloud_score(raw[:, self.indices].float(), self.params)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
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


class EnsembleModel(PredictableModel):
    """Weighted mean of the members' cloud probabilities.

    Each member runs with the ensemble's TTA views (``predict_proba``), on the channels of
    its own bands picked by name from the ensemble's input.

    Args:
        members: Models (``PredictableModel``), each with ``bands``.
        weights: One non-negative weight per member (normalized to sum 1).
        bands: The ensemble's input bands; every member's bands must be among them.

    Raises:
        ValueError: No members, bad weights, or a member band absent from ``bands``.
    """

    def __init__(
        self,
        members: Sequence[PredictableModel],
        weights: Optional[Sequence[float]] = None,
        bands: Optional[Sequence[str]] = None,
    ):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        super().__init__(bands if bands is not None else members[0].bands)
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"ensemble weights {weights} must be {len(members)} non-negative numbers "
                "with a positive sum"
            )
        self.members = nn.ModuleList(members)
        multiples = [int(getattr(member, "input_multiple", 1) or 1) for member in members]
        self.input_multiple = functools.reduce(math.lcm, multiples, 1)
        self.weights = [w / sum(weights) for w in weights]
        self.member_indices: list[list[int]] = []
        for index, member in enumerate(members):
            missing = [band for band in member.bands if band not in self.bands]
            if missing:
                raise ValueError(
                    f"ensemble member {index} needs bands {missing} absent from the "
                    f"ensemble's bands {self.bands}; list every member band in the ensemble "
                    "manifest"
                )
            self.member_indices.append([self.bands.index(band) for band in member.bands])

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

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """2-class logits of the weighted mean probability (identity view only)."""
        return probability_to_logits(self.predict_proba(raw, ["identity"]))


def threshold_manifest(params: Optional[dict[str, Any]] = None, **fields: Any) -> Manifest:
    """A ``kind: threshold`` manifest for the classic rule (threshold 0.5, no TTA)."""
    values: dict[str, Any] = {
        "name": "threshold-rule",
        "kind": "threshold",
        "architecture": {"name": "threshold", "args": dict(params or {})},
        "weights": None,
        "tta": ["identity"],
        "threshold": 0.5,
    }
    values.update(fields)
    return Manifest(**values)


def threshold_model(params: Optional[dict[str, Any]] = None) -> ThresholdModel:
    """The classic rule as a ready model (used when a model folder cannot be loaded)."""
    manifest = threshold_manifest(params)
    model = ThresholdModel(manifest.architecture["args"], manifest.bands)
    model.manifest = manifest
    return model.eval()


def _check_manifest(manifest: Manifest, folder: str) -> None:
    if manifest.tta_merge not in TTA_MERGES:
        raise ValueError(
            "{}: unknown tta_merge {!r}; choose one of: {}".format(
                folder, manifest.tta_merge, ", ".join(TTA_MERGES)
            )
        )
    resolve_views(manifest.tta)  # raises on unknown views


def _load_network(folder: str, manifest: Manifest, device: str) -> CloudModel:
    if not manifest.weights:
        raise ValueError(
            f"{folder}: a 'network' manifest must name its weights file (e.g. weights.pt)"
        )
    path = os.path.join(folder, manifest.weights)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{folder}: weights file {path} named in the manifest is missing")
    state_dict = torch.load(path, map_location=device)
    return CloudModel.from_manifest(manifest, state_dict)


def _load_ensemble(folder: str, manifest: Manifest, device: str) -> EnsembleModel:
    if not manifest.members:
        raise ValueError(
            f"{folder}: an 'ensemble' manifest needs members [{{'path': ..., 'weight': ...}}]"
        )
    members = []
    weights = []
    for entry in manifest.members:
        if "path" not in entry:
            raise ValueError(f"{folder}: ensemble member {entry} has no 'path'")
        members.append(load_model(os.path.join(folder, entry["path"]), device))
        weights.append(float(entry.get("weight", 1.0)))
    return EnsembleModel(members, weights, manifest.bands)


def load_model(folder: str, device: str = "cpu") -> PredictableModel:
    """Build the model a folder describes, on ``device``, in eval mode.

    ``kind: network`` loads ``<folder>/<manifest.weights>`` (the network's plain state dict)
    with ``torch.load(path, map_location=device)``; ``kind: threshold`` needs no weights;
    ``kind: ensemble`` loads each member sub-folder recursively.

    Returns:
        A model exposing ``.manifest``, ``.bands`` and ``predict_proba(raw) -> [N, H, W]``.

    Raises:
        FileNotFoundError: No manifest or weights.
        ValueError: An invalid manifest or weights that do not fit.
    """
    manifest = read_manifest(folder)
    _check_manifest(manifest, folder)
    if manifest.kind == "network":
        model: PredictableModel = _load_network(folder, manifest, device)
    elif manifest.kind == "threshold":
        model = ThresholdModel((manifest.architecture or {}).get("args"), manifest.bands)
    else:
        model = _load_ensemble(folder, manifest, device)
    model.manifest = manifest
    LOGGER.info(
        "loaded %s model %r from %s (bands %s, TTA %s)",
        manifest.kind,
        manifest.name,
        folder,
        ",".join(manifest.bands),
        ",".join(resolve_views(manifest.tta)),
    )
    return model.to(device).eval()

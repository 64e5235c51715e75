"""The model-kind registry and ``load_model`` (runtime-safe).

A model folder's manifest names its ``kind``; ``load_model(folder, device)`` reads the
manifest and calls the loader registered for that kind. The runtime registers what the
competition zip can run (``network``, ``threshold``, ``ensemble``); the library registers
more kinds (e.g. exported ONNX Runtime or OpenVINO backends, nnU-Net teachers) with
:func:`register_kind` when their module is imported, without editing this file. Such kinds
are library-only: ``oncloudn pack`` refuses them, with the reason given at registration.

A loader is ``load(folder, manifest, device) -> model``: it builds a model of the protocol
of ``models.PredictableModel`` (any object with ``bands``, ``manifest``, ``logits``,
``predict_proba``, ``to`` and ``eval``) carrying ``manifest``. Fields specific to a kind live
in the manifest's ``options``: the names given at registration are checked here, or the
loader checks them itself. Ensemble members load through this same registry, so an
ensemble may mix kinds.
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from .manifest import Manifest, path_inside, read_manifest
from .models import CloudModel, EnsembleModel, ThresholdModel
from .tta import TTA_MERGES, resolve_views

LOGGER = logging.getLogger(__name__)

RUNTIME_PACKAGE = __name__.rsplit(".", 1)[0]
PROTOCOL = ("bands", "manifest", "logits", "predict_proba", "to", "eval")

Loader = Callable[[str, Manifest, str], Any]


@dataclass(frozen=True)
class ModelKind:
    """A registered model kind.

    Attributes:
        name: The manifest's ``kind``.
        load: ``load(folder, manifest, device) -> model``.
        runtime: Whether the competition runtime registers it itself (it ships in the zip).
        reason: Why the runtime cannot load it (library-only kinds), shown by ``pack``.
        options: Option names the kind accepts (``None``: its loader checks them).
        module: The module that registered it.
    """

    name: str
    load: Loader
    runtime: bool = False
    reason: str = ""
    options: Optional[tuple[str, ...]] = None
    module: str = ""


KINDS: dict[str, ModelKind] = {}


def register_kind(
    name: str,
    load: Loader,
    runtime: bool = False,
    reason: str = "",
    options: Optional[Sequence[str]] = None,
    replace: bool = False,
) -> ModelKind:
    """Register the loader of manifests whose ``kind`` is ``name``.

    Args:
        name: The kind, e.g. ``onnx``.
        load: ``load(folder, manifest, device)``, returning a model of the protocol that
            carries ``manifest`` (see ``models.PredictableModel``).
        runtime: ``True`` only for kinds the competition runtime registers itself (their
            loader lives in ``oncloudn/runtime``, which ships in the zip).
        reason: For a library-only kind, why the runtime cannot load it, e.g. "the
            competition runtime has no onnxruntime"; ``pack`` shows it when it refuses.
        options: The names the kind accepts in the manifest's ``options`` (checked by
            ``load_model``); ``None`` leaves the check to ``load``.
        replace: Replace an existing registration of ``name``.

    Returns:
        The registration.

    Raises:
        ValueError: An empty name, a name already registered (without ``replace``), or
            ``runtime=True`` for a loader defined outside ``oncloudn/runtime``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model kind needs a non-empty name, got {name!r}")
    if name in KINDS and not replace:
        raise ValueError(
            f"model kind {name!r} is already registered by {KINDS[name].module}; pass "
            "replace=True to override it"
        )
    module = getattr(load, "__module__", "") or ""
    if runtime and not module.startswith(RUNTIME_PACKAGE + "."):
        raise ValueError(
            f"model kind {name!r}: runtime=True needs a loader defined in {RUNTIME_PACKAGE} "
            f"(the code that ships in the zip), not in {module or '?'}; register it with "
            "runtime=False and a reason"
        )
    kind = ModelKind(
        name=name,
        load=load,
        runtime=bool(runtime),
        reason=reason or ("" if runtime else f"registered by {module}, not shipped in the zip"),
        options=None if options is None else tuple(options),
        module=module,
    )
    KINDS[name] = kind
    return kind


def registered_kinds(runtime_only: bool = False) -> list[str]:
    """Names of the registered kinds (only those the runtime registers itself, if asked)."""
    return sorted(name for name, kind in KINDS.items() if kind.runtime or not runtime_only)


def get_kind(name: str, source: str = "manifest") -> ModelKind:
    """The registration of kind ``name``.

    Raises:
        ValueError: An unregistered kind (the message lists the registered ones).
    """
    if name not in KINDS:
        raise ValueError(
            "{}: unknown model kind {!r}; registered kinds: {} (a library kind is registered "
            "when its module is imported, see oncloudn.runtime.loader.register_kind)".format(
                source, name, ", ".join(registered_kinds())
            )
        )
    return KINDS[name]


def _check_manifest(manifest: Manifest, kind: ModelKind, folder: str) -> None:
    if manifest.tta_merge not in TTA_MERGES:
        raise ValueError(
            "{}: unknown tta_merge {!r}; choose one of: {}".format(
                folder, manifest.tta_merge, ", ".join(TTA_MERGES)
            )
        )
    resolve_views(manifest.tta)  # raises on unknown views
    if kind.options is None:
        return
    unknown = sorted(set(manifest.options) - set(kind.options))
    if unknown:
        raise ValueError(
            "{}: kind {!r} does not take options {}; valid options: {}".format(
                folder, kind.name, unknown, ", ".join(kind.options) or "none"
            )
        )


def _check_protocol(model: Any, kind: ModelKind, folder: str) -> None:
    missing = [name for name in PROTOCOL if not hasattr(model, name)]
    if missing or getattr(model, "manifest", None) is None:
        raise TypeError(
            "{}: the {!r} loader ({}) returned a {} lacking {}; a model needs {} and carries "
            "its manifest".format(
                folder,
                kind.name,
                kind.module,
                type(model).__name__,
                ", ".join(missing or ["a manifest"]),
                ", ".join(PROTOCOL),
            )
        )


def load_model(folder: str, device: str = "cpu") -> Any:
    """Build the model a folder describes, on ``device``, in eval mode.

    Returns:
        A model of the protocol of ``models.PredictableModel``: ``.manifest``, ``.bands``
        and ``predict_proba(raw) -> [N, H, W]``.

    Raises:
        FileNotFoundError: No manifest or weights.
        ValueError: An invalid manifest, an unregistered kind, or weights that do not fit.
    """
    manifest = read_manifest(folder)
    kind = get_kind(manifest.kind, os.path.join(folder, "manifest.json"))
    _check_manifest(manifest, kind, folder)
    model = kind.load(folder, manifest, device)
    _check_protocol(model, kind, folder)
    LOGGER.info(
        "loaded %s model %r from %s (bands %s, TTA %s)",
        manifest.kind,
        manifest.name,
        folder,
        ",".join(manifest.bands),
        ",".join(resolve_views(manifest.tta)),
    )
    return model.to(device).eval()


def _load_network(folder: str, manifest: Manifest, device: str) -> CloudModel:
    """``kind: network``: ``<folder>/<manifest.weights>``, the network's plain state dict."""
    if not manifest.weights:
        raise ValueError(
            f"{folder}: a 'network' manifest must name its weights file (e.g. weights.pt)"
        )
    path = path_inside(folder, manifest.weights, "weights")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{folder}: weights file {path} named in the manifest is missing")
    state_dict = torch.load(path, map_location=device)
    return CloudModel.from_manifest(manifest, state_dict)


def _load_threshold(folder: str, manifest: Manifest, device: str) -> ThresholdModel:
    """``kind: threshold``: the rule with the manifest's ``architecture.args``, no weights."""
    return ThresholdModel.from_manifest(manifest)


def _load_ensemble(folder: str, manifest: Manifest, device: str) -> EnsembleModel:
    """``kind: ensemble``: each member sub-folder through ``load_model`` (any kind)."""
    if not manifest.members:
        raise ValueError(
            f"{folder}: an 'ensemble' manifest needs members [{{'path': ..., 'weight': ...}}]"
        )
    members = []
    weights = []
    for index, entry in enumerate(manifest.members):
        if not isinstance(entry, dict) or "path" not in entry:
            raise ValueError(f"{folder}: ensemble member {entry} has no 'path'")
        path = path_inside(folder, entry["path"], f"members[{index}].path")
        members.append(load_model(path, device))
        weights.append(float(entry.get("weight", 1.0)))
    return EnsembleModel(members, weights, manifest.bands, manifest)


register_kind("network", _load_network, runtime=True, options=())
register_kind("threshold", _load_threshold, runtime=True, options=())
register_kind("ensemble", _load_ensemble, runtime=True, options=())

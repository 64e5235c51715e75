"""The model-folder manifest (runtime-safe): what a model is and how to run it.

A model folder holds ``manifest.json`` (this schema), the weights named in it (a plain
``state_dict`` saved with ``torch.save``, loadable by torch 1.8), and, for trained models,
``config.yaml`` and ``metrics.json``. The manifest is plain JSON so that ``main.py`` reads it
with the standard library inside the competition runtime.

Post-processing always runs in this fixed order: merge TTA views -> merge ensemble members ->
optional smoothing -> threshold -> morphology -> chip-level rules -> nodata pixels set to 0.

Format versions:

- 1: ``kind`` was one of ``network``, ``threshold``, ``ensemble``.
- 2 (current): ``kind`` is any kind registered with ``oncloudn.runtime.loader.register_kind``
  (checked when the folder is loaded, not here), and ``options`` holds the fields specific to
  a kind, checked by that kind's loader (the built-in kinds take none: their fields predate
  version 2). A version-1 file reads unchanged (``options`` empty) and is upgraded to version
  2 in memory; code that only knows version 1 refuses a version-2 file with "upgrade
  oncloudn".
"""

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from .atomic import atomic_write_json
from .bands import BANDS
from .heads import head_spec

FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.pt"


@dataclass
class PostprocessSpec:
    """Pixel-level post-processing after the ensemble merge. Zero disables a step.

    Attributes:
        smoothing_sigma: Gaussian sigma (pixels) applied to the probability map before the
            threshold.
        opening: Disk radius of a binary opening (removes specks).
        closing: Disk radius of a binary closing (closes gaps).
        dilation: Disk radius of a final dilation (cloud edges are often under-labelled).
        erosion: Disk radius of a final erosion.
        min_area: Connected cloud components smaller than this many pixels are removed.
        max_hole_area: Holes (clear components enclosed by cloud) up to this area are filled.
    """

    smoothing_sigma: float = 0.0
    opening: int = 0
    closing: int = 0
    dilation: int = 0
    erosion: int = 0
    min_area: int = 0
    max_hole_area: int = 0


@dataclass
class ChipRules:
    """Chip-level rules applied after morphology.

    Attributes:
        min_cloud_fraction: A chip whose predicted cloud fraction (of valid pixels) is below
            this becomes all clear.
        full_cloud_fraction: A chip whose predicted cloud fraction is at or above this becomes
            all cloud (1.0 or more disables the rule).
    """

    min_cloud_fraction: float = 0.0
    full_cloud_fraction: float = 1.01


@dataclass
class Manifest:
    """Everything needed to rebuild and run a model folder.

    Attributes:
        name: Human-readable name.
        kind: The loader that builds the model, a name registered with
            ``oncloudn.runtime.loader.register_kind``. The runtime registers ``network``
            (weights + architecture), ``threshold`` (the classic Sentinel-2 rule, no weights)
            and ``ensemble`` (weighted members, each a model sub-folder); the library may
            register more (e.g. exported backends), which ``pack`` refuses.
        architecture: ``{"name": <registry name>, "args": {...}}``; for ``threshold`` the
            rule's parameters go in ``args``.
        bands: Input bands in channel order.
        normalization: ``{"name": ..., "params": {...}}`` (see ``normalize.py``).
        head: ``{"activation": "sigmoid" | "softmax", "channels": 1 | 2 | K,
            "positive_index": i}``. Networks' outputs map to 2-class logits ``[clear, cloud]``:
            a 1-channel sigmoid z -> ``[0, z]``; a K-class softmax -> ``[logsumexp(others),
            cloud]``.
        weights: File name of the state dict inside the folder (``None`` for rules).
        tta: TTA views (names from ``tta.py``), merged by ``tta_merge``.
        tta_merge: ``probability`` (mean of probabilities) or ``logit`` (mean of logits).
        members: For ensembles: ``[{"path": "<sub-folder>", "weight": w}, ...]``.
        threshold: Cloud probability threshold.
        postprocess: Pixel-level steps.
        chip_rules: Chip-level rules.
        options: Fields specific to the kind, checked by the kind's loader (empty for the
            built-in kinds).
        provenance: Git commit, package versions, folds hash, training data.
        metrics: Validation metrics recorded at save time.
        format_version: Schema version of this file.
    """

    name: str = "model"
    kind: str = "network"
    architecture: dict[str, Any] = field(default_factory=lambda: {"name": "unet", "args": {}})
    bands: list[str] = field(default_factory=lambda: list(BANDS))
    normalization: dict[str, Any] = field(
        default_factory=lambda: {"name": "reflectance", "params": {}}
    )
    head: dict[str, Any] = field(default_factory=head_spec)
    weights: Optional[str] = WEIGHTS_NAME
    tta: list[str] = field(default_factory=lambda: ["identity"])
    tta_merge: str = "probability"
    members: list[dict[str, Any]] = field(default_factory=list)
    threshold: float = 0.5
    postprocess: PostprocessSpec = field(default_factory=PostprocessSpec)
    chip_rules: ChipRules = field(default_factory=ChipRules)
    options: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The manifest as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "manifest") -> "Manifest":
        """Build a manifest from a dict, rejecting unknown keys with a helpful message.

        A version-1 dict is upgraded to the current version (``options`` empty). The kind is
        checked against the registered kinds when the folder is loaded, not here.

        Raises:
            ValueError: Unknown keys, a kind that is not a name, options that are not a
                mapping, or a newer format version.
        """
        data = dict(data)
        version = int(data.get("format_version", FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{source}: format_version {version} is newer than this code understands "
                f"({FORMAT_VERSION}); upgrade oncloudn"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                "{}: unknown manifest keys {}; valid keys: {} (fields specific to a kind go in "
                "'options')".format(source, unknown, ", ".join(sorted(known)))
            )
        data["postprocess"] = _sub_spec(PostprocessSpec, data.get("postprocess"), source)
        data["chip_rules"] = _sub_spec(ChipRules, data.get("chip_rules"), source)
        data["format_version"] = FORMAT_VERSION
        manifest = cls(**data)
        if not isinstance(manifest.kind, str) or not manifest.kind:
            raise ValueError(
                f"{source}: kind {manifest.kind!r} must be the name of a model kind, "
                "e.g. 'network', 'threshold' or 'ensemble'"
            )
        if not isinstance(manifest.options, dict):
            raise ValueError(
                f"{source}: options must be a mapping of the kind's fields, "
                f"got {type(manifest.options).__name__}"
            )
        return manifest


def _sub_spec(spec_cls, value, source):
    if value is None:
        return spec_cls()
    if isinstance(value, spec_cls):
        return value
    known = {f.name for f in fields(spec_cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(
            "{}: unknown {} keys {}; valid keys: {}".format(
                source, spec_cls.__name__, unknown, ", ".join(sorted(known))
            )
        )
    return spec_cls(**value)


def path_inside(folder: str, name: Any, field_name: str) -> str:
    """The real path of ``name``, a path a manifest names, checked to lie inside ``folder``.

    Symbolic links are resolved on both sides, so a link that points out of the folder is
    refused like ``../x`` or an absolute path.

    Args:
        folder: The model folder.
        name: The path as the manifest names it (relative to the folder).
        field_name: The manifest field, for the message (e.g. ``weights``, ``members[1].path``).

    Raises:
        ValueError: ``name`` is not a non-empty relative path, or it resolves outside the
            folder.
    """
    source = os.path.join(str(folder), MANIFEST_NAME)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source}: {field_name} must be a relative path, got {name!r}")
    if os.path.isabs(name):
        raise ValueError(
            f"{source}: {field_name} {name!r} is an absolute path; a manifest names files "
            "inside its model folder (copy the file into the folder and name it relative to it)"
        )
    root = os.path.realpath(str(folder))
    real = os.path.realpath(os.path.join(root, name))
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise ValueError(
            f"{source}: {field_name} {name!r} resolves to {real}, outside the model folder "
            f"{root}; a manifest may only name files inside its folder (copy the file in)"
        )
    return real


def read_manifest(folder: str) -> Manifest:
    """Read ``<folder>/manifest.json``.

    Raises:
        FileNotFoundError: The folder has no manifest (it is not a model folder).
        ValueError: The manifest is not valid JSON or has unknown keys.
    """
    path = os.path.join(folder, MANIFEST_NAME)
    if not os.path.exists(folder):
        raise FileNotFoundError(
            f"{str(folder)!r} is not a model folder: it does not exist (expected a folder "
            f"holding {MANIFEST_NAME} and its weights)"
        )
    if os.path.isfile(folder):
        name = os.path.basename(str(folder))
        hint = (
            f"pass the folder that holds it ({os.path.dirname(str(folder)) or '.'})"
            if name == MANIFEST_NAME
            else "expected a model folder holding manifest.json"
        )
        raise FileNotFoundError(f"{str(folder)!r} is not a model folder: it is a file; {hint}")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{str(folder)!r} is not a model folder: {MANIFEST_NAME} is missing (create one "
            "with `oncloudn train`, or `oncloudn.models.folder.save_model_folder`)"
        )
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    return Manifest.from_dict(data, source=path)


def write_manifest(folder: str, manifest: Manifest) -> str:
    """Write ``<folder>/manifest.json`` atomically and return its path."""
    path = os.path.join(folder, MANIFEST_NAME)
    atomic_write_json(path, manifest.to_dict())
    return path

"""``oncloudn pack``: model folder(s) -> ``submission.zip`` for the competition runtime.

The zip holds, at its root::

    main.py                  the repository's submission/main.py (the runtime entry point)
    oncloudn/__init__.py     a minimal package marker
    oncloudn/runtime/*.py    the runtime-safe code, vendored (Python 3.9, torch 1.8)
    model/                   the model folder; several folders become an ensemble whose
                             members are model/member_00, model/member_01, ...

Before writing, every manifest is read, the runtime's ability to run each model is checked
(a kind the runtime registers itself, not a library-only kind such as an ONNX Runtime
backend; network registry; smp pairs verified under smp 0.2.1; no ONNX/OpenVINO weight
files), and the model is built once and run on a small input. Entries are written in a
fixed order with a fixed timestamp, so the same inputs give the same zip (and SHA-256). The
model copy and the zip are staged in ``<zip folder>/.oncloudn-staging/`` (locked while the
run lives; a later ``pack`` removes what a killed one left there) and the finished zip is
renamed into place.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from oncloudn import __version__
from oncloudn.errors import ConfigError, SubmissionError
from oncloudn.hashing import sha256_file
from oncloudn.models.builders import make_ensemble_folder
from oncloudn.models.describe import describe_model_folder
from oncloudn.models.folder import (
    check_model_paths,
    copy_model_folder,
    manifest_path,
    model_files,
    read_model_manifest,
)
from oncloudn.models.kinds import register_library_kinds
from oncloudn.runtime import loader
from oncloudn.runtime.loader import load_model
from oncloudn.runtime.manifest import Manifest, read_manifest, write_manifest
from oncloudn.runtime.networks import NETWORKS, RUNTIME_VERIFIED_SMP, smp_pair
from oncloudn.runtime.tta import resolve_views
from oncloudn.submission.staging import staging_folder

logger = logging.getLogger(__name__)

FORBIDDEN_TOP_LEVEL = ("data", "tests", "predictions", "submission")
UNSUPPORTED_BACKENDS = ("onnx", "onnxruntime", "openvino", "tensorrt")
UNSUPPORTED_WEIGHT_SUFFIXES = (".onnx", ".xml", ".engine", ".trt")
MODEL_ARCNAME = "model"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
CHECK_SIZE = 64


@dataclass(frozen=True)
class PackEntry:
    """One file of the zip: its name, size and compressed size in bytes."""

    name: str
    size: int
    compressed_size: int


@dataclass
class PackResult:
    """What ``pack_submission`` wrote.

    Attributes:
        path: The zip.
        entries: Its files, in order.
        total_bytes: Sum of the files' uncompressed sizes.
        zip_bytes: Size of the zip itself.
        sha256: SHA-256 of the zip.
        model: Summary of the packed model (``describe_model_folder``).
    """

    path: Path
    entries: list[PackEntry] = field(default_factory=list)
    total_bytes: int = 0
    zip_bytes: int = 0
    sha256: str = ""
    model: dict = field(default_factory=dict)


def package_root() -> Path:
    """The folder holding the ``oncloudn`` package (the repository root in a checkout)."""
    return Path(__file__).resolve().parents[2]


def main_py_path() -> Path:
    """The runtime entry point, ``submission/main.py`` of the source checkout.

    Raises:
        SubmissionError: The package is not installed from a source checkout.
    """
    path = package_root() / "submission" / "main.py"
    if not path.is_file():
        raise SubmissionError(
            f"{path} not found: `oncloudn pack` ships the repository's submission/main.py, so it "
            "needs a source checkout (git clone the project and `pip install -e .`)"
        )
    return path


def runtime_sources() -> list[tuple[str, Path]]:
    """``(arcname, path)`` of every ``.py`` file of ``oncloudn/runtime`` (caches excluded)."""
    runtime_dir = Path(__file__).resolve().parents[1] / "runtime"
    sources = []
    for path in sorted(runtime_dir.rglob("*.py")):
        relative = path.relative_to(runtime_dir)
        if "__pycache__" in relative.parts or any(p.startswith(".") for p in relative.parts):
            continue
        sources.append((f"oncloudn/runtime/{relative.as_posix()}", path))
    if not sources:
        raise SubmissionError(f"no runtime sources found in {runtime_dir}; reinstall oncloudn")
    return sources


def check_zip_entries(names: Sequence[str]) -> list[str]:
    """Problems of a zip's entry names: ``main.py`` missing at the root, forbidden folders."""
    problems = []
    if "main.py" not in names:
        problems.append("main.py is missing at the root of the zip (the runtime runs main.py)")
    tops = sorted({name.split("/", 1)[0] for name in names if "/" in name or name.endswith("/")})
    tops += sorted({name for name in names if "/" not in name})
    for top in tops:
        if top.rstrip("/") in FORBIDDEN_TOP_LEVEL:
            problems.append(
                f"top-level entry {top.rstrip('/')!r} is forbidden in a submission zip (the "
                f"runtime mounts or creates {', '.join(FORBIDDEN_TOP_LEVEL)}); rename it"
            )
    return problems


def _kind_problem(folder: Path, kind_name: str) -> str | None:
    """Why the zip's runtime cannot load this kind (``None`` when it registers the kind).

    The library's kinds are registered first (``oncloudn.models.kinds``), so a library-only
    kind is refused with the reason it was registered with.
    """
    register_library_kinds()
    kind = loader.KINDS.get(kind_name)  # looked up per call: the registry may be swapped
    if kind is not None and kind.runtime:
        return None
    runtime = ", ".join(loader.registered_kinds(runtime_only=True))
    if kind is None:
        registered = ", ".join(loader.registered_kinds())
        why = f"kind {kind_name!r} is not registered (registered: {registered})"
    else:
        why = f"kind {kind_name!r} is library-only ({kind.reason})"
    return (
        f"{folder}: {why}; the competition runtime loads only {runtime}: distill it into a "
        "PyTorch student (`oncloudn distill`) or pack a PyTorch model folder"
    )


def _backend_problem(folder: Path, manifest: Manifest) -> str | None:
    """An ONNX/OpenVINO/TensorRT backend named in a runtime kind's architecture or weights."""
    architecture = manifest.architecture or {}
    args = architecture.get("args") or {}
    backends = {str(architecture.get("name", "")).lower()}
    backends |= {str(architecture.get("backend", "")).lower(), str(args.get("backend", "")).lower()}
    weights = str(manifest.weights or "").lower()
    backend = next((b for b in UNSUPPORTED_BACKENDS if b in backends), None)
    if backend is None and weights.endswith(UNSUPPORTED_WEIGHT_SUFFIXES):
        backend = Path(weights).suffix
    if not backend:
        return None
    return (
        f"{folder}: backend {backend!r} cannot run in the competition runtime (it has no "
        "onnxruntime or openvino); distill it into a PyTorch student (`oncloudn distill`) "
        "or pack a PyTorch model folder"
    )


def _network_problem(folder: Path, manifest: Manifest, allow_unverified: bool) -> str | None:
    """A network the zip could not rebuild, or an smp pair not verified under smp 0.2.1."""
    name = (manifest.architecture or {}).get("name")
    args = (manifest.architecture or {}).get("args") or {}
    if name not in NETWORKS:
        return (
            f"{folder}: network {name!r} is not in the runtime's registry "
            f"({', '.join(sorted(NETWORKS))}); the zip could not rebuild it"
        )
    if name == "smp" and smp_pair(args) not in RUNTIME_VERIFIED_SMP and not allow_unverified:
        verified = ", ".join(f"{a}/{e}" for a, e in sorted(RUNTIME_VERIFIED_SMP))
        return (
            f"{folder}: smp {'/'.join(smp_pair(args))} is not verified to load in the "
            f"runtime's smp 0.2.1 (verified: {verified}); check it with `oncloudn run-local` "
            "and pack with --allow-unverified"
        )
    return None


def runtime_problems(
    folder: Path, manifest: Manifest | None = None, allow_unverified: bool = False
) -> list[str]:
    """Why the competition runtime could not run a model folder (members included).

    A kind the runtime does not register itself (a library-only kind, or one no module has
    registered) is refused with its reason; so are ONNX/OpenVINO backends, networks outside
    the runtime's registry and (unless ``allow_unverified``) smp pairs not verified under
    the runtime's smp 0.2.1.
    """
    manifest = manifest or read_model_manifest(folder)
    problem = _kind_problem(folder, manifest.kind) or _backend_problem(folder, manifest)
    if problem is None and manifest.kind == "network":
        problem = _network_problem(folder, manifest, allow_unverified)
    problems = [problem] if problem else []
    for index, member in enumerate(manifest.members):
        member_dir = folder / manifest_path(folder, member.get("path"), f"members[{index}].path")
        problems += runtime_problems(member_dir, allow_unverified=allow_unverified)
    return problems


def _resolve_tta(tta: str | Sequence[str] | None) -> list[str] | None:
    if tta is None:
        return None
    try:
        return resolve_views(tta if isinstance(tta, str) else list(tta))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def apply_overrides(
    folder: Path, tta: str | Sequence[str] | None = None, threshold: float | None = None
) -> None:
    """Set TTA views (on every network of the folder) and the top-level threshold."""
    views = _resolve_tta(tta)
    manifest = read_manifest(str(folder))
    if views is not None:
        if manifest.kind == "ensemble":
            for member in manifest.members:
                apply_overrides(folder / member["path"], tta=views)
        manifest.tta = views
    if threshold is not None:
        if not 0.0 < float(threshold) < 1.0:
            raise ConfigError(f"threshold must lie strictly between 0 and 1, got {threshold}")
        manifest.threshold = float(threshold)
    write_manifest(str(folder), manifest)


def stage_model(
    model_dirs: Sequence[str | os.PathLike],
    destination: Path,
    ensemble_weights: Sequence[float] | None = None,
) -> Path:
    """Copy one model folder, or an ensemble of several, into ``destination``."""
    if not model_dirs:
        raise ConfigError("pack needs at least one model folder")
    if len(model_dirs) == 1:
        if ensemble_weights is not None:
            raise ConfigError("--ensemble-weights needs two or more model folders")
        return copy_model_folder(model_dirs[0], destination)
    return make_ensemble_folder(destination, model_dirs, weights=ensemble_weights)


def validate_model(folder: Path) -> None:
    """Build the model once and run it on a small zero input (weights load, shapes agree).

    Raises:
        SubmissionError: The runtime's loader or forward pass fails.
    """
    try:
        model = load_model(str(folder), "cpu")
        channels = len(model.manifest.bands)
        with torch.no_grad():
            probability = model.predict_proba(torch.zeros(1, channels, CHECK_SIZE, CHECK_SIZE))
    except Exception as error:  # any failure here means the zip would fail in the runtime
        raise SubmissionError(
            f"the model in {folder} does not load or run with the runtime's code: "
            f"{type(error).__name__}: {error}"
        ) from error
    if tuple(probability.shape[-2:]) != (CHECK_SIZE, CHECK_SIZE):
        raise SubmissionError(
            f"the model in {folder} returned shape {tuple(probability.shape)} for a "
            f"{CHECK_SIZE} x {CHECK_SIZE} input; expected [N, {CHECK_SIZE}, {CHECK_SIZE}]"
        )


def _package_marker() -> str:
    return (
        f'"""oncloudn {__version__}: runtime code vendored by `oncloudn pack`."""\n\n'
        f'__version__ = "{__version__}"\n'
    )


def _zip_items(model_dir: Path) -> list[tuple[str, Path | str]]:
    items: list[tuple[str, Path | str]] = [("main.py", main_py_path())]
    items.append(("oncloudn/__init__.py", _package_marker()))
    items += runtime_sources()
    for relative in sorted(model_files(model_dir), key=lambda p: p.as_posix()):
        items.append((f"{MODEL_ARCNAME}/{relative.as_posix()}", model_dir / relative))
    return items


def _write_zip(path: Path, items: list[tuple[str, Path | str]]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname, source in items:
            info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            data = source.encode("utf-8") if isinstance(source, str) else source.read_bytes()
            archive.writestr(info, data)


def pack_submission(
    model_dirs: Sequence[str | os.PathLike],
    out_zip: str | os.PathLike,
    force: bool = False,
    ensemble_weights: Sequence[float] | None = None,
    tta: str | Sequence[str] | None = None,
    threshold: float | None = None,
    allow_unverified: bool = False,
) -> PackResult:
    """Build ``submission.zip`` from one model folder (or an ensemble of several).

    Args:
        model_dirs: Model folders; two or more become an ensemble.
        out_zip: Destination zip.
        force: Overwrite an existing zip.
        ensemble_weights: One weight per model folder (default: equal).
        tta: Override the TTA views: a preset (``none``, ``flips``, ``d4``...) or view names.
        threshold: Override the cloud probability threshold.
        allow_unverified: Pack smp pairs not verified under the runtime's smp 0.2.1.

    Returns:
        The zip's path, entries, sizes and SHA-256.

    Raises:
        SubmissionError: The zip exists (without ``force``), a model cannot run in the
            runtime, or the zip would break the runtime's rules.
        ConfigError: Bad overrides or ensemble weights.
    """
    out_zip = Path(out_zip)
    if out_zip.exists() and not force:
        raise SubmissionError(f"{out_zip} already exists; pass --force to overwrite it")
    if out_zip.suffix != ".zip":
        raise SubmissionError(f"{out_zip}: the submission must be a .zip file")
    problems = []
    for model_dir in model_dirs:
        check_model_paths(model_dir)  # every path a manifest names stays inside its folder
        problems += runtime_problems(Path(model_dir), allow_unverified=allow_unverified)
    if problems:
        raise SubmissionError("cannot pack: " + "; ".join(problems))
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    with staging_folder(out_zip.parent, "pack") as staging:
        model_dir = stage_model(model_dirs, staging / MODEL_ARCNAME, ensemble_weights)
        apply_overrides(model_dir, tta=tta, threshold=threshold)
        validate_model(model_dir)
        items = _zip_items(model_dir)
        problems = check_zip_entries([name for name, _ in items])
        if problems:
            raise SubmissionError("cannot pack: " + "; ".join(problems))
        summary = describe_model_folder(model_dir)
        temp_zip = staging / out_zip.name
        _write_zip(temp_zip, items)
        os.replace(temp_zip, out_zip)
    return describe_zip(out_zip, model=summary)


def describe_zip(path: str | os.PathLike, model: dict | None = None) -> PackResult:
    """Entries, sizes and SHA-256 of an existing zip."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        entries = [
            PackEntry(info.filename, info.file_size, info.compress_size)
            for info in archive.infolist()
        ]
    return PackResult(
        path=path,
        entries=entries,
        total_bytes=sum(entry.size for entry in entries),
        zip_bytes=path.stat().st_size,
        sha256=sha256_file(path),
        model=model or {},
    )

"""The library's model kinds: one place that registers every kind the runtime does not ship.

The runtime registers ``network``, ``threshold`` and ``ensemble`` itself
(``oncloudn/runtime/loader.py``). Kinds that need more than the competition runtime has
(onnxruntime, nnU-Net v2 networks...) live in library modules listed in
:data:`LIBRARY_KIND_MODULES`;
:func:`register_library_kinds` imports each and calls its ``register()``. Loading a model
folder (``oncloudn.models.folder.load_model_folder``) and ``pack`` call it, so their kinds
load everywhere and ``pack`` refuses them with the reason they were registered with.
Registering needs none of the optional packages: a kind's module imports them only when a
folder of that kind is loaded.

To add a kind: a module with a ``register()`` that calls
``oncloudn.runtime.loader.register_kind(name, load, runtime=False, reason=..., options=...)``
(idempotently), one line in :data:`LIBRARY_KIND_MODULES`, and, if its weights file is not a
torch state dict, a parameter counter in :data:`PARAMETER_COUNTERS`; if its folders hold
more files than the weights, a lister in :data:`EXTRA_MODEL_FILES`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from oncloudn.errors import ConfigError
from oncloudn.runtime.loader import registered_kinds
from oncloudn.runtime.manifest import path_inside

LIBRARY_KIND_MODULES = (
    "oncloudn.models.onnx_model",  # kind "onnx": ONNX Runtime sessions (e.g. ukis-csmask)
    "oncloudn.models.nnunet_model",  # kind "nnunet": nnU-Net v2 trained models (teachers)
    "oncloudn.models.openvino_model",  # kind "openvino": exported IR (oncloudn export openvino)
)

ParameterCounter = Callable[[str | os.PathLike], "int | None"]


def _count_onnx(path: str | os.PathLike) -> int | None:
    # lazy: onnx_model is only needed to count an ONNX file
    from oncloudn.models.onnx_model import count_onnx_parameters

    return count_onnx_parameters(path)


def _count_openvino(path: str | os.PathLike) -> int | None:
    # lazy: openvino_model is only needed to count an IR
    from oncloudn.models.openvino_model import count_openvino_parameters

    return count_openvino_parameters(path)


PARAMETER_COUNTERS: dict[str, ParameterCounter] = {"onnx": _count_onnx, "openvino": _count_openvino}
"""Kind -> counter of the values in its weights file (``None`` when it cannot tell)."""


def _nnunet_files(folder: Path, options: Mapping[str, Any]) -> list[Path]:
    """Every file of a copied nnU-Net trained model (``options.trained_model`` inside it).

    An absolute ``trained_model`` references a folder outside (``nnunet import --reference``)
    and lists nothing; a relative one must stay inside the model folder.

    Raises:
        ConfigError: A relative ``trained_model`` that resolves outside the folder.
    """
    trained = options.get("trained_model")
    if not trained or Path(trained).is_absolute():
        return []  # a referenced trained model lives outside the folder
    try:
        path_inside(str(folder), trained, "options.trained_model")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    root = Path(folder) / trained
    return sorted(p.relative_to(folder) for p in root.rglob("*") if p.is_file())


def _openvino_files(folder: Path, options: Mapping[str, Any]) -> list[Path]:
    """The IR's ``.bin`` weights beside the ``.xml`` the manifest names."""
    return sorted(p.relative_to(folder) for p in Path(folder).glob("*.bin") if p.is_file())


FileLister = Callable[[Path, Mapping[str, Any]], list[Path]]
EXTRA_MODEL_FILES: dict[str, FileLister] = {
    "nnunet": _nnunet_files,
    "openvino": _openvino_files,
}
"""Kind -> the files beyond its weights that its folders hold (relative paths), so copying,
ensembles and ``pack`` carry them: ``lister(folder, manifest.options)``."""


def kind_files(folder: str | os.PathLike, kind: str, options: Mapping[str, Any]) -> list[Path]:
    """The extra files a model folder of ``kind`` holds (relative paths; none for most)."""
    lister = EXTRA_MODEL_FILES.get(kind)
    return lister(Path(folder), options) if lister else []


def register_library_kinds() -> list[str]:
    """Import every module of :data:`LIBRARY_KIND_MODULES` and register its kind.

    Returns:
        Every registered kind (runtime and library).
    """

    for name in LIBRARY_KIND_MODULES:
        importlib.import_module(name).register()
    return registered_kinds()

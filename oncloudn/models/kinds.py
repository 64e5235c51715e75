"""The library's model kinds: one place that registers every kind the runtime does not ship.

The runtime registers ``network``, ``threshold`` and ``ensemble`` itself
(``oncloudn/runtime/loader.py``). Kinds that need more than the competition runtime has
(nnU-Net v2 networks, onnxruntime...) live in library modules listed in
:data:`LIBRARY_KIND_MODULES`; :func:`register_library_kinds` imports each and calls its
``register()``. Loading a model folder (``oncloudn.models.folder.load_model_folder``) calls
it, so these kinds load everywhere. Registering needs none of the optional packages: a
kind's module imports them only when a folder of that kind is loaded.

To add a kind: a module with a ``register()`` that calls
``oncloudn.runtime.loader.register_kind(name, load, runtime=False, reason=..., options=...)``
(idempotently), and one line in :data:`LIBRARY_KIND_MODULES`.
"""

from __future__ import annotations

import importlib

LIBRARY_KIND_MODULES = (
    "oncloudn.models.nnunet_model",  # kind "nnunet": nnU-Net v2 trained models (teachers)
)


def register_library_kinds() -> list[str]:
    """Import every module of :data:`LIBRARY_KIND_MODULES` and register its kind.

    Returns:
        Every registered kind (runtime and library).
    """
    from oncloudn.runtime.loader import registered_kinds

    for name in LIBRARY_KIND_MODULES:
        importlib.import_module(name).register()
    return registered_kinds()

"""Import guard for ``oncloudn run-local``: the competition runtime's package list, enforced.

``run-local`` puts this folder first on ``PYTHONPATH`` and sets ``ONCLOUDN_GUARD_ROOT`` to the
unzipped submission; Python then imports this module at start-up (``site`` imports any
``sitecustomize`` it finds). It installs a ``sys.meta_path`` finder that refuses, with an
``ImportError`` naming the module, imports the runtime could not satisfy:

- a top-level module that is neither standard library nor in :data:`RUNTIME_PACKAGES`, when
  the import is made by the submission's own code (any file under the guard root, the vendored
  ``oncloudn/runtime`` included). Imports made by allowed packages themselves (torch importing
  ``sympy``, smp importing ``timm``...) are not policed: they are those packages' own
  dependencies, present in the runtime's image;
- ``oncloudn`` (or any sub-module) found outside the guard root: the zip must vendor what it
  uses; an installed toolkit is not in the runtime;
- ``onnxruntime`` and ``openvino`` imported by the submission's code, whatever the host has
  installed: the runtime has neither.

It also refuses outgoing network connections (the runtime has no network; Planetary Computer
STAC access is not emulated). ``ONCLOUDN_ALLOW_NETWORK=1`` lifts that rule.

Limits: a module already imported by an allowed package (cached in ``sys.modules``) is not
re-checked when the submission imports it later; versions are not emulated (the host's torch
and numpy run, only smp/timm can be pinned with ``oncloudn runtime-env install``).

This guard catches honest mistakes only. Code that means to gets past any Python hook
(``pkgutil.resolve_name``, ``exec`` of compiled code, loading a file by path, ``_socket``,
``connect_ex``, ``python -I`` subprocesses, ``ctypes``). What holds against such code is the
operating system: run-local's Linux namespaces (no network, read-only file system), and an
interpreter whose environment holds only the runtime's packages (``--python``,
``oncloudn runtime-env install-python``).
"""

import os
import socket
import sys

# Top-level import names of the runtime image (drivendataorg/cloud-cover-runtime), and the
# modules those packages themselves need at import time.
RUNTIME_PACKAGES = frozenset(
    {
        "affine",
        "albumentations",
        "certifi",
        "cv2",
        "efficientnet_pytorch",
        "loguru",
        "munch",
        "nnunet",
        "numpy",
        "pandas",
        "PIL",
        "planetary_computer",
        "pretrainedmodels",
        "pystac",
        "pystac_client",
        "rasterio",
        "scipy",
        "segmentation_models_pytorch",
        "skimage",
        "tifffile",
        "timm",
        "torch",
        "torchvision",
        "ttach",
        "typer",
        "yaml",
    }
)
ALWAYS_REFUSED = frozenset({"onnxruntime", "openvino"})
GUARD_ROOT_VAR = "ONCLOUDN_GUARD_ROOT"
ALLOW_NETWORK_VAR = "ONCLOUDN_ALLOW_NETWORK"


def _stdlib_names():
    """Top-level standard-library names (``sys.stdlib_module_names`` from Python 3.10)."""
    names = getattr(sys, "stdlib_module_names", None)
    if names:
        return frozenset(names)
    # lazy: the guard runs at every interpreter start; only Python < 3.10 needs these
    import pkgutil
    import sysconfig

    stdlib = sysconfig.get_paths()["stdlib"]
    found = set(sys.builtin_module_names)
    for info in pkgutil.iter_modules([stdlib, os.path.join(stdlib, "lib-dynload")]):
        found.add(info.name)
    return frozenset(found)


_STDLIB = _stdlib_names()
_HERE = os.path.dirname(os.path.abspath(__file__))
_SKIPPED_FRAMES = ("<frozen importlib", os.path.join("importlib", ""))


def _within(path, root):
    path = os.path.realpath(path)
    return path == root or path.startswith(root + os.sep)


class RuntimeImportGuard:
    """A meta-path finder that refuses imports the competition runtime could not satisfy."""

    def __init__(self, root):
        self.root = os.path.realpath(root)

    def find_spec(self, fullname, path=None, target=None):
        """Refuse forbidden modules; return ``None`` to let the normal finders do the rest.

        Refusals raise ``ModuleNotFoundError`` (an ``ImportError``), so submission code that
        falls back on ``except ImportError`` behaves as it would in the runtime.
        """
        top = fullname.partition(".")[0]
        if top == "oncloudn":
            return self._oncloudn_spec(fullname, path, target)
        if top not in ALWAYS_REFUSED and (
            top in _STDLIB or top in RUNTIME_PACKAGES or top.startswith("_")
        ):
            return None
        requester = self._requester()
        if requester is None or not _within(requester, self.root):
            # An allowed package importing (or probing for) its own optional dependency.
            return None
        where = os.path.relpath(requester, self.root)
        if top in ALWAYS_REFUSED:
            message = (
                f"{fullname!r} (imported by {where}) is not available in the competition "
                "runtime (it has no onnxruntime or openvino); ship PyTorch weights instead"
            )
        else:
            message = (
                f"{fullname!r} (imported by {where}) is not available in the competition "
                "runtime; its packages are the standard library and "
                + ", ".join(sorted(RUNTIME_PACKAGES))
            )
        raise ModuleNotFoundError(message, name=fullname)

    def _oncloudn_spec(self, fullname, path, target):
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None:
            raise ModuleNotFoundError(
                f"{fullname!r} is not in the submission zip, and is not available in the "
                "competition runtime: `oncloudn pack` vendors only oncloudn/runtime; code in "
                "the zip may import oncloudn.runtime only",
                name=fullname,
            )
        locations = [spec.origin] if spec.origin else []
        locations += list(spec.submodule_search_locations or [])
        outside = [p for p in locations if p and p not in ("built-in", "frozen")]
        outside = [p for p in outside if not _within(p, self.root)]
        if outside:
            raise ModuleNotFoundError(
                f"{fullname!r} was found outside the submission folder ({outside[0]}), and "
                "is not available in the competition runtime: the zip must carry the code it "
                "imports (`oncloudn pack` vendors oncloudn/runtime)",
                name=fullname,
            )
        return spec

    @staticmethod
    def _requester():
        """The file of the first frame outside the import machinery and this guard."""
        frame = sys._getframe(2)
        while frame is not None:
            filename = frame.f_code.co_filename
            machinery = filename.startswith(_SKIPPED_FRAMES[0]) or _SKIPPED_FRAMES[1] in filename
            own = filename.startswith(_HERE) or filename.startswith("<")
            if not machinery and not own:
                return filename
            frame = frame.f_back
        return None


def _refuse_connect(self, address, *args, **kwargs):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise OSError(
            f"network access is not available in the competition runtime (connect to {address!r} "
            "refused by oncloudn run-local)"
        )
    return _ORIGINAL_CONNECT(self, address, *args, **kwargs)


_ORIGINAL_CONNECT = socket.socket.connect


def install():
    """Install the guard when ``ONCLOUDN_GUARD_ROOT`` is set (run-local sets it)."""
    root = os.environ.get(GUARD_ROOT_VAR)
    if not root:
        return
    if not any(isinstance(finder, RuntimeImportGuard) for finder in sys.meta_path):
        sys.meta_path.insert(0, RuntimeImportGuard(root))
    if os.environ.get(ALLOW_NETWORK_VAR) != "1":
        socket.socket.connect = _refuse_connect


install()

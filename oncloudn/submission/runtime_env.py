"""The competition runtime's package versions, rebuilt here for ``run-local`` and parity tests.

Two environments, each built from an exact pinned package list and stamped with that list's
key (``oncloudn-env.json``, written last, so a half-built environment is never used):

- **runtime smp** (:func:`install_runtime_smp`): segmentation-models-pytorch 0.2.1, timm
  0.4.12, pretrainedmodels 0.7.4, efficientnet-pytorch 0.6.3, munch and six (which
  pretrainedmodels imports without declaring it), installed without dependencies into a
  folder that ``run-local`` puts first on ``PYTHONPATH`` beside today's torch. Default place:
  ``<repo>/.runtime-smp`` in a source checkout, else ``~/.oncloudn/runtime-smp``;
  ``$ONCLOUDN_RUNTIME_SMP`` overrides it.
- **runtime Python** (:func:`install_runtime_python`): a Python 3.9 virtual environment with
  the runtime's torch 1.8.0, numpy 1.20.3, scipy, rasterio, scikit-image, albumentations,
  pandas, smp 0.2.1, ... (``../shared/RUNTIME.md``). Default place: a cache folder keyed by
  the package list (``$XDG_CACHE_HOME`` or ``~/.cache``), so a changed list never reuses an
  old environment; ``$ONCLOUDN_RUNTIME_PYTHON`` names another interpreter.

An install reuses an environment only when its stamp matches the pinned list and a smoke test
(import the stack, build the verified smp networks, run one forward pass) passes in a fresh
subprocess; otherwise it rebuilds it from nothing (``fresh=True`` always does).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from oncloudn.errors import SubmissionError

logger = logging.getLogger(__name__)

# What smp 0.2.1 imports besides torch, torchvision, numpy and tqdm (pretrainedmodels imports
# `six` without declaring it: without it every smp zip falls back to the threshold rule).
RUNTIME_SMP_PACKAGES = [
    "segmentation-models-pytorch==0.2.1",
    "timm==0.4.12",
    "pretrainedmodels==0.7.4",
    "efficientnet-pytorch==0.6.3",
    "munch==2.5.0",
    "six==1.16.0",
]
# The runtime's binary stack for Python 3.9 (RUNTIME.md), as wheels only. nnunet 1.7.0 is
# left out: none of the toolkit's zips import it, and it pulls a large tree of its own.
RUNTIME_PYTHON_PACKAGES = [
    "torch==1.8.0",
    "torchvision==0.9.0",
    "numpy==1.20.3",
    "pandas==1.2.5",
    "scipy==1.7.1",
    "scikit-image==0.18.2",
    "pillow==8.2.0",
    "tifffile==2021.8.8",
    "rasterio==1.2.6",
    "albumentations==1.0.3",
    "opencv-python-headless==4.5.3.56",
    "matplotlib==3.4.2",
    "networkx==2.6.2",
    "imageio==2.9.0",
    "PyWavelets==1.1.1",
    "ttach==0.0.3",
    "loguru==0.5.3",
    "typer==0.3.2",
    "tqdm==4.62.0",
]
ENV_VAR = "ONCLOUDN_RUNTIME_SMP"
PYTHON_ENV_VAR = "ONCLOUDN_RUNTIME_PYTHON"
REPO_DIR_NAME = ".runtime-smp"
STAMP_NAME = "oncloudn-env.json"
SMOKE_TIMEOUT_S = 600

# Run in a fresh interpreter with the environment under test: import the stack, build the
# smp pairs the toolkit ships most and run one forward pass. A missing module is named.
SMOKE_SCRIPT = """
import sys
try:
    import torch
    import segmentation_models_pytorch as smp
    for encoder in ("resnet34", "efficientnet-b0", "mobilenet_v2", "timm-efficientnet-b0"):
        net = smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=4).eval()
        with torch.no_grad():
            net(torch.zeros(1, 4, 64, 64))
    for name in sys.argv[1:]:
        __import__(name)
except ModuleNotFoundError as error:
    print("MISSING " + str(error.name))
    sys.exit(3)
print("OK smp " + smp.__version__ + " torch " + torch.__version__)
"""
# Modules the runtime Python must import besides smp (its binary stack).
RUNTIME_PYTHON_MODULES = [
    "numpy",
    "scipy",
    "rasterio",
    "PIL",
    "tifffile",
    "skimage",
    "pandas",
    "albumentations",
    "timm",
]


def packages_key(packages: list[str], extra: str = "") -> str:
    """SHA-256 (hex) of an exact package list (order-free) and an extra tag."""
    text = "\n".join(sorted(packages)) + "\n" + extra
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_stamp(folder: Path) -> dict | None:
    """The stamp of an environment folder, or ``None`` when absent or unreadable."""
    try:
        return json.loads((Path(folder) / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def stamp_matches(folder: Path, key: str) -> bool:
    """Whether ``folder`` was built (completely) from the package list with ``key``."""
    stamp = read_stamp(folder)
    return stamp is not None and stamp.get("key") == key


def _write_stamp(folder: Path, key: str, packages: list[str]) -> None:
    data = {"key": key, "packages": sorted(packages)}
    (Path(folder) / STAMP_NAME).write_text(json.dumps(data, indent=2), encoding="utf-8")


def repo_root() -> Path | None:
    """The source checkout holding the ``oncloudn`` package, or ``None`` for a plain install."""
    root = Path(__file__).resolve().parents[2]
    if (root / "setup.cfg").is_file() or (root / "pyproject.toml").is_file():
        return root
    return None


def default_target() -> Path:
    """The runtime smp's one default place: the checkout's folder, else the home folder."""
    root = repo_root()
    return root / REPO_DIR_NAME if root is not None else Path.home() / ".oncloudn" / "runtime-smp"


def runtime_smp_dir() -> Path | None:
    """The folder holding the runtime's smp 0.2.1, or ``None`` when it is not installed.

    ``$ONCLOUDN_RUNTIME_SMP`` is used as given; the default place only when its stamp
    matches :data:`RUNTIME_SMP_PACKAGES` (a stale or half-built folder is ignored with a
    warning). There is no second fallback, so a leftover elsewhere cannot hide a missing step.

    Raises:
        SubmissionError: ``ONCLOUDN_RUNTIME_SMP`` names a folder that does not exist.
    """
    configured = os.environ.get(ENV_VAR)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise SubmissionError(
                f"{ENV_VAR}={configured!r} is not a folder; run `oncloudn runtime-env install "
                f"--target {configured}` or unset {ENV_VAR}"
            )
        return path.resolve()
    target = default_target()
    if stamp_matches(target, packages_key(RUNTIME_SMP_PACKAGES)):
        return target.resolve()
    if target.exists():
        logger.warning(
            "%s is stale or incomplete (its package list differs); ignoring it: run "
            "`oncloudn runtime-env install`",
            target,
        )
    return None


def installed_versions(target: Path) -> dict[str, str]:
    """Versions of the packages installed in ``target``, read from their ``.dist-info`` names."""
    versions = {}
    for info in sorted(Path(target).glob("*.dist-info")):
        name, _, version = info.name[: -len(".dist-info")].rpartition("-")
        if name:
            versions[name.lower().replace("_", "-")] = version
    return versions


def runtime_smp_version(target: Path | None = None) -> str | None:
    """The smp version installed in ``target`` (default: :func:`runtime_smp_dir`)."""
    target = target if target is not None else runtime_smp_dir()
    if target is None:
        return None
    return installed_versions(target).get("segmentation-models-pytorch")


def smoke_test(python: str, pythonpath: Path | None = None, modules: list[str] = ()) -> str:
    """Import the smp stack (and ``modules``) with ``python`` in a fresh process.

    Args:
        python: The interpreter to test.
        pythonpath: A folder put first on ``PYTHONPATH`` (the runtime smp folder).
        modules: Further modules that must import.

    Returns:
        The smoke test's last line (``OK smp <version> torch <version>``).

    Raises:
        SubmissionError: A module is missing (named) or the stack fails otherwise.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["HF_HUB_OFFLINE"] = "1"
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run(
        [python, "-c", SMOKE_SCRIPT, *modules],
        capture_output=True,
        text=True,
        env=env,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    if result.returncode == 3 and last.startswith("MISSING "):
        raise SubmissionError(
            f"the runtime environment ({python}"
            + (f" with {pythonpath}" if pythonpath else "")
            + f") lacks the module {last.split()[1]!r}; add its package to the pinned list in "
            "oncloudn/submission/runtime_env.py and reinstall with --fresh"
        )
    if result.returncode != 0 or not last.startswith("OK "):
        raise SubmissionError(
            f"the runtime environment ({python}) failed its smoke test (exit "
            f"{result.returncode}): {result.stderr.strip()[-1500:]}"
        )
    return last


def _run_pip(command: list[str], what: str) -> None:
    logger.info("running %s", " ".join(command))
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SubmissionError(f"{command[0]} not found; {what} needs it") from None
    if result.returncode != 0:
        raise SubmissionError(
            f"{what}: `{' '.join(command[:5])} ...` failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-2000:]}; check access to PyPI and retry"
        )


def _up_to_date(target: Path, key: str, smoke: Callable[[], str]) -> bool:
    """Whether ``target`` was built from the list with ``key`` and still passes ``smoke``."""
    if not stamp_matches(target, key):
        return False
    try:
        smoke()
    except SubmissionError as error:
        logger.warning("rebuilding %s: %s", target, error)
        return False
    logger.info("%s is up to date", target)
    return True


def _clear_for_rebuild(target: Path, marker: str) -> None:
    """Empty ``target`` before a rebuild, refusing a folder that is not an environment."""
    if not target.exists():
        return
    ours = read_stamp(target) is not None or (target / marker).exists()
    if any(target.iterdir()) and not ours:
        raise SubmissionError(
            f"{target} exists and is not a runtime environment made by oncloudn; choose an "
            "empty or new --target"
        )
    shutil.rmtree(target)


def install_runtime_smp(
    target: Path | None = None, python: str = sys.executable, fresh: bool = False
) -> Path:
    """Install :data:`RUNTIME_SMP_PACKAGES` without dependencies into ``target``.

    An existing folder is reused when its stamp matches and the smoke test passes (unless
    ``fresh``); otherwise it is rebuilt from nothing.

    Args:
        target: Destination folder (default: :func:`default_target`).
        python: The interpreter whose pip installs and which runs the smoke test.
        fresh: Rebuild even when the folder is up to date.

    Returns:
        The folder.

    Raises:
        SubmissionError: pip failed, the smoke test failed (naming a missing module), or
            ``target`` is a non-empty folder that is not such an environment.
    """
    target = Path(target) if target is not None else default_target()
    key = packages_key(RUNTIME_SMP_PACKAGES)
    smoke = functools.partial(smoke_test, python, target)
    if not fresh and _up_to_date(target, key, smoke):
        return target.resolve()
    _clear_for_rebuild(target, "segmentation_models_pytorch")
    target.mkdir(parents=True)
    command = [python, "-m", "pip", "install", "--no-deps", "--target", str(target)]
    _run_pip(command + RUNTIME_SMP_PACKAGES, f"pip could not install the runtime smp into {target}")
    logger.info("smoke test: %s", smoke())
    _write_stamp(target, key, RUNTIME_SMP_PACKAGES)
    return target.resolve()


def find_python39() -> str | None:
    """A working Python 3.9 interpreter: ``python3.9`` on ``PATH``, else pyenv's, else None.

    Each candidate is asked for its version: a pyenv shim whose version is not selected fails
    that and is skipped, and the pyenv root behind such a shim is searched instead.
    """
    on_path = shutil.which("python3.9")
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]
    if on_path and Path(on_path).parent.name == "shims":
        roots.append(str(Path(on_path).parent.parent))
    candidates = [on_path]
    for root in dict.fromkeys(r for r in roots if r):
        candidates += sorted(glob.glob(os.path.join(root, "versions", "3.9*", "bin", "python3.9")))
    candidates += ["/usr/bin/python3.9", "/usr/local/bin/python3.9"]
    for candidate in candidates:
        if candidate and _is_python39(candidate):
            return candidate
    return None


def _is_python39(python: str) -> bool:
    try:
        result = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[:2] == (3, 9))"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == "True"


def runtime_python_key() -> str:
    """The key of the runtime Python's package lists (binary stack + smp stack)."""
    return packages_key(RUNTIME_PYTHON_PACKAGES + RUNTIME_SMP_PACKAGES, extra="python3.9")


def default_python_target() -> Path:
    """The runtime Python's default place: a cache folder named after its package key."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "oncloudn" / f"runtime-py39-{runtime_python_key()[:12]}"


def _venv_python(target: Path) -> Path:
    return Path(target) / "bin" / "python"


def runtime_python() -> str | None:
    """A runtime-like Python 3.9 interpreter for run-local, or ``None``.

    ``$ONCLOUDN_RUNTIME_PYTHON`` when set, else the environment at
    :func:`default_python_target` when :func:`install_runtime_python` completed it.

    Raises:
        SubmissionError: The variable names a file that does not exist.
    """
    value = os.environ.get(PYTHON_ENV_VAR)
    if value:
        if not Path(value).expanduser().is_file():
            raise SubmissionError(
                f"{PYTHON_ENV_VAR}={value!r} is not an interpreter; point it at the python of "
                "`oncloudn runtime-env install-python` or unset it"
            )
        return str(Path(value).expanduser())
    target = default_python_target()
    if stamp_matches(target, runtime_python_key()) and _venv_python(target).is_file():
        return str(_venv_python(target))
    return None


def install_runtime_python(
    target: Path | None = None, base_python: str | None = None, fresh: bool = False
) -> Path:
    """Create a Python 3.9 virtual environment with the runtime's package versions.

    ``run-local`` then runs ``main.py`` with it (see :func:`runtime_python`), so a zip is
    tested on the runtime's Python, torch, numpy, scipy, rasterio and smp versions (CPU).
    The binary stack is installed from wheels only; the smp stack (pure Python, partly
    source distributions) without dependencies. An environment whose stamp matches and whose
    smoke test passes is reused unless ``fresh``.

    Args:
        target: The environment's folder (default: :func:`default_python_target`).
        base_python: A Python 3.9 interpreter (default: :func:`find_python39`).
        fresh: Rebuild even when the environment is up to date.

    Returns:
        The environment's interpreter.

    Raises:
        SubmissionError: No Python 3.9, venv or pip failed, or the smoke test failed.
    """
    base_python = base_python or find_python39()
    if base_python is None:
        raise SubmissionError(
            "no Python 3.9 found (python3.9 on PATH or ~/.pyenv/versions/3.9*); install one, "
            "e.g. `pyenv install 3.9`, and pass --base /path/to/python3.9"
        )
    target = Path(target) if target is not None else default_python_target()
    python = str(_venv_python(target))
    key = runtime_python_key()
    smoke = functools.partial(smoke_test, python, modules=RUNTIME_PYTHON_MODULES)
    if not fresh and _up_to_date(target, key, smoke):
        return Path(python)
    _clear_for_rebuild(target, "pyvenv.cfg")
    what = f"creating the runtime Python in {target}"
    if shutil.which(base_python) is None:
        raise SubmissionError(
            f"{base_python} not found; install Python 3.9 (e.g. `pyenv install 3.9`) and pass "
            "--base /path/to/python3.9"
        )
    _run_pip([base_python, "-m", "venv", str(target)], what)
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    _run_pip(pip + ["--only-binary=:all:", *RUNTIME_PYTHON_PACKAGES], what)
    _run_pip(pip + ["--no-deps", *RUNTIME_SMP_PACKAGES], what)
    logger.info("smoke test: %s", smoke())
    _write_stamp(target, key, RUNTIME_PYTHON_PACKAGES + RUNTIME_SMP_PACKAGES)
    return Path(python)

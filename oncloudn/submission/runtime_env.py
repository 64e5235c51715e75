"""The competition runtime's segmentation-models-pytorch 0.2.1, installed beside today's torch.

The toolkit trains with a recent smp, but ``submission.zip`` runs on smp 0.2.1 (with timm
0.4.12, pretrainedmodels 0.7.4, efficientnet-pytorch 0.6.3). Those packages are installed
without dependencies into a separate folder, so that ``oncloudn run-local`` (and parity
tests) can put them first on ``PYTHONPATH`` without touching the main environment.

Lookup order of :func:`runtime_smp_dir`: the ``ONCLOUDN_RUNTIME_SMP`` environment variable,
``<repo>/.runtime-smp`` in a source checkout, then ``~/.oncloudn/runtime-smp``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from oncloudn.errors import SubmissionError

logger = logging.getLogger(__name__)

RUNTIME_SMP_PACKAGES = [
    "segmentation-models-pytorch==0.2.1",
    "timm==0.4.12",
    "pretrainedmodels==0.7.4",
    "efficientnet-pytorch==0.6.3",
    "munch",
]
ENV_VAR = "ONCLOUDN_RUNTIME_SMP"
PYTHON_ENV_VAR = "ONCLOUDN_RUNTIME_PYTHON"
# A Python 3.9 environment matching the runtime's versions, for `run-local --python`.
RUNTIME_PYTHON_PACKAGES = [
    "torch==1.8.0",
    "torchvision==0.9.0",
    "numpy==1.20.3",
    "scipy==1.7.1",
    "rasterio==1.2.6",
    "pillow==8.2.0",
    "tifffile==2021.8.8",
    "six",
]
REPO_DIR_NAME = ".runtime-smp"
HOME_DIR = Path.home() / ".oncloudn" / "runtime-smp"
PYTHON_HOME_DIR = Path.home() / ".oncloudn" / "runtime-py39"


def repo_root() -> Path | None:
    """The source checkout holding the ``oncloudn`` package, or ``None`` for a plain install."""
    root = Path(__file__).resolve().parents[2]
    if (root / "setup.cfg").is_file() or (root / "pyproject.toml").is_file():
        return root
    return None


def default_target() -> Path:
    """Where ``install_runtime_smp`` installs by default: the checkout, else the home folder."""
    root = repo_root()
    return root / REPO_DIR_NAME if root is not None else HOME_DIR


def runtime_smp_dir() -> Path | None:
    """The folder holding the runtime's smp 0.2.1, or ``None`` when it is not installed.

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
    root = repo_root()
    candidates = ([root / REPO_DIR_NAME] if root is not None else []) + [HOME_DIR]
    for candidate in candidates:
        if (candidate / "segmentation_models_pytorch").is_dir():
            return candidate.resolve()
    return None


def installed_versions(target: Path) -> dict[str, str]:
    """Versions of the packages installed in ``target``, read from their ``.dist-info`` names."""
    versions = {}
    for info in sorted(Path(target).glob("*.dist-info")):
        match = re.match(r"(.+)-([^-]+)\.dist-info$", info.name)
        if match:
            versions[match.group(1).lower().replace("_", "-")] = match.group(2)
    return versions


def runtime_smp_version(target: Path | None = None) -> str | None:
    """The smp version installed in ``target`` (default: :func:`runtime_smp_dir`)."""
    target = target if target is not None else runtime_smp_dir()
    if target is None:
        return None
    return installed_versions(target).get("segmentation-models-pytorch")


def install_runtime_smp(target: Path | None = None, python: str = sys.executable) -> Path:
    """Install :data:`RUNTIME_SMP_PACKAGES` without dependencies into ``target``.

    Args:
        target: Destination folder (default: :func:`default_target`).
        python: The interpreter whose pip runs the install.

    Returns:
        The folder.

    Raises:
        SubmissionError: pip failed (its output is in the message).
    """
    target = Path(target) if target is not None else default_target()
    target.mkdir(parents=True, exist_ok=True)
    command = [python, "-m", "pip", "install", "--no-deps", "--upgrade", "--target", str(target)]
    logger.info("installing %s into %s", ", ".join(RUNTIME_SMP_PACKAGES), target)
    result = subprocess.run(
        command + RUNTIME_SMP_PACKAGES, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SubmissionError(
            f"pip could not install the runtime smp into {target} (exit {result.returncode}): "
            f"{result.stderr.strip()[-2000:]}; check network access to PyPI and retry"
        )
    return target.resolve()


def runtime_python() -> str | None:
    """A runtime-like Python 3.9 interpreter for run-local, or ``None``.

    ``ONCLOUDN_RUNTIME_PYTHON`` when set, else ``~/.oncloudn/runtime-py39/bin/python`` when
    :func:`install_runtime_python` has made it.

    Raises:
        SubmissionError: The variable names a file that does not exist.
    """
    value = os.environ.get(PYTHON_ENV_VAR)
    if not value:
        default = PYTHON_HOME_DIR / "bin" / "python"
        return str(default) if default.is_file() else None
    if not Path(value).expanduser().is_file():
        raise SubmissionError(
            f"{PYTHON_ENV_VAR}={value!r} is not an interpreter; point it at e.g. "
            ".runtime-py39/bin/python or unset it"
        )
    return str(Path(value).expanduser())


def install_runtime_python(target: Path | None = None, base_python: str = "python3.9") -> Path:
    """Create a Python 3.9 virtual environment with the runtime's torch 1.8 and friends.

    ``run-local`` then runs ``main.py`` with it (see :func:`runtime_python`), so a zip is
    tested on the runtime's Python, torch, numpy, scipy and rasterio versions (CPU only).

    Args:
        target: The environment's folder (default: ``~/.oncloudn/runtime-py39``).
        base_python: A Python 3.9 interpreter.

    Returns:
        The environment's interpreter.

    Raises:
        SubmissionError: No such interpreter, or venv/pip failed.
    """
    target = Path(target) if target is not None else PYTHON_HOME_DIR
    python = target / "bin" / "python"
    steps = [
        [base_python, "-m", "venv", str(target)],
        [str(python), "-m", "pip", "install", "--only-binary=:all:", *RUNTIME_PYTHON_PACKAGES],
    ]
    for command in steps:
        logger.info("running %s", " ".join(command))
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise SubmissionError(
                f"{command[0]} not found; install Python 3.9 (e.g. `pyenv install 3.9`) and "
                "pass --base /path/to/python3.9"
            ) from None
        if result.returncode != 0:
            raise SubmissionError(
                f"`{' '.join(command[:4])} ...` failed (exit {result.returncode}): "
                f"{result.stderr.strip()[-2000:]}"
            )
    return python

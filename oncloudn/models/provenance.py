"""Provenance of a saved model: git commit, package versions, folds hash, training data."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from oncloudn.errors import ConfigError
from oncloudn.hashing import sha256_file

PROVENANCE_PACKAGES = ("torch", "numpy", "segmentation_models_pytorch", "oncloudn")


def plain_data(value: Any) -> Any:
    """A config value as plain YAML/JSON data (dataclasses, paths and tuples converted)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy / torch values
        return value.tolist()
    return value


def git_commit(repo: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}`` of the checkout holding the package, or ``{}``."""
    repo = repo or Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return {}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if commit.returncode != 0:
        return {}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def package_versions(names: Sequence[str] = PROVENANCE_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` when a package is absent)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_provenance(
    folds_path: str | os.PathLike | None = None, training_data: Any = None
) -> dict[str, Any]:
    """Provenance of a model saved now: git commit, package versions, folds hash, data."""
    provenance: dict[str, Any] = {
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "packages": package_versions(),
    }
    git = git_commit()
    if git:
        provenance["git_commit"] = git["commit"]
        provenance["git_dirty"] = git["dirty"]
    if folds_path is not None:
        if not Path(folds_path).is_file():
            raise ConfigError(f"folds file {folds_path} does not exist; pass the folds CSV used")
        provenance["folds_file"] = Path(folds_path).name
        provenance["folds_sha256"] = sha256_file(folds_path)
    if training_data is not None:
        provenance["training_data"] = plain_data(training_data)
    return provenance

"""The runtime smp folder: lookup, versions, install errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from oncloudn.errors import SubmissionError
from oncloudn.submission.runtime_env import (
    RUNTIME_SMP_PACKAGES,
    install_runtime_smp,
    installed_versions,
    runtime_smp_dir,
    runtime_smp_version,
)


def _fake_install(target: Path) -> Path:
    (target / "segmentation_models_pytorch").mkdir(parents=True)
    (target / "segmentation_models_pytorch-0.2.1.dist-info").mkdir()
    (target / "timm-0.4.12.dist-info").mkdir()
    return target


def test_env_var_wins(tmp_path: Path, monkeypatch) -> None:
    target = _fake_install(tmp_path / "smp")
    monkeypatch.setenv("ONCLOUDN_RUNTIME_SMP", str(target))
    assert runtime_smp_dir() == target.resolve()
    assert runtime_smp_version() == "0.2.1"
    assert installed_versions(target) == {"segmentation-models-pytorch": "0.2.1", "timm": "0.4.12"}
    monkeypatch.setenv("ONCLOUDN_RUNTIME_SMP", str(tmp_path / "missing"))
    with pytest.raises(SubmissionError, match="runtime-env install"):
        runtime_smp_dir()


def test_pins_match_the_runtime() -> None:
    assert "segmentation-models-pytorch==0.2.1" in RUNTIME_SMP_PACKAGES
    assert "timm==0.4.12" in RUNTIME_SMP_PACKAGES


def test_failed_install_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="pip could not install"):
        install_runtime_smp(tmp_path / "t", python="false")


def test_runtime_python_lookup_and_install_errors(tmp_path: Path, monkeypatch) -> None:
    from oncloudn.submission.runtime_env import install_runtime_python, runtime_python

    monkeypatch.setenv("ONCLOUDN_RUNTIME_PYTHON", str(tmp_path / "nope"))
    with pytest.raises(SubmissionError, match="not an interpreter"):
        runtime_python()
    monkeypatch.setenv("ONCLOUDN_RUNTIME_PYTHON", sys.executable)
    assert runtime_python() == sys.executable
    with pytest.raises(SubmissionError, match="not found"):
        install_runtime_python(tmp_path / "env", base_python=str(tmp_path / "python3.9"))

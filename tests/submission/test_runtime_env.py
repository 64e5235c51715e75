"""The runtime smp folder: lookup, versions, install errors."""

from __future__ import annotations

import json
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


def test_default_place_needs_a_matching_stamp_and_has_no_home_fallback(
    tmp_path: Path, monkeypatch
) -> None:
    from oncloudn.submission import runtime_env

    monkeypatch.delenv("ONCLOUDN_RUNTIME_SMP", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _fake_install(tmp_path / "home" / ".oncloudn" / "runtime-smp")  # a leftover elsewhere
    checkout = tmp_path / "checkout"
    monkeypatch.setattr(runtime_env, "repo_root", lambda: checkout)
    assert runtime_smp_dir() is None  # the leftover in HOME does not count
    target = _fake_install(checkout / ".runtime-smp")
    assert runtime_smp_dir() is None  # no stamp: a half-built or old folder is ignored
    (target / runtime_env.STAMP_NAME).write_text('{"key": "stale"}')
    assert runtime_smp_dir() is None
    key = runtime_env.packages_key(RUNTIME_SMP_PACKAGES)
    (target / runtime_env.STAMP_NAME).write_text(json.dumps({"key": key}))
    assert runtime_smp_dir() == target.resolve()


def test_the_pinned_list_covers_what_smp_imports() -> None:
    names = {spec.split("==")[0] for spec in RUNTIME_SMP_PACKAGES}
    assert {"six", "munch", "pretrainedmodels", "efficientnet-pytorch"} <= names
    assert all("==" in spec for spec in RUNTIME_SMP_PACKAGES)  # exact pins: the key means it


def test_smoke_test_names_the_missing_module(tmp_path: Path) -> None:
    from oncloudn.submission.runtime_env import smoke_test

    package = tmp_path / "env" / "segmentation_models_pytorch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import six_is_not_installed_here\n")
    with pytest.raises(SubmissionError, match="lacks the module 'six_is_not_installed_here'"):
        smoke_test(sys.executable, tmp_path / "env")


def test_installed_runtime_smp_passes_the_smoke_test() -> None:
    from oncloudn.submission.runtime_env import smoke_test

    target = runtime_smp_dir()
    if target is None:
        pytest.skip("the runtime's smp 0.2.1 is not installed (`oncloudn runtime-env install`)")
    assert smoke_test(sys.executable, target).startswith("OK smp 0.2.1")


def test_rebuild_refuses_a_folder_that_is_not_an_environment(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("my files")
    with pytest.raises(SubmissionError, match="not a runtime environment made by oncloudn"):
        install_runtime_smp(target, python="false")
    assert (target / "notes.txt").read_text() == "my files"


def test_find_python39_skips_broken_shims(tmp_path: Path, monkeypatch) -> None:
    from oncloudn.submission.runtime_env import find_python39

    shims = tmp_path / "pyenv" / "shims"
    shims.mkdir(parents=True)
    shim = shims / "python3.9"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.9: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    real = tmp_path / "pyenv" / "versions" / "3.9.18" / "bin" / "python3.9"
    real.parent.mkdir(parents=True)
    real.write_text("#!/bin/sh\necho True\n")  # answers the version question like a 3.9
    real.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:/usr/bin:/bin")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    assert find_python39() == str(real)
    monkeypatch.delenv("PYENV_ROOT")  # found through the root behind the shim
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert find_python39() == str(real)


def test_smp_import_error_names_the_missing_module() -> None:
    from oncloudn.runtime.networks import _smp_import_hint

    hint = _smp_import_hint(ModuleNotFoundError("No module named 'six'", name="six"))
    assert "'six'" in hint and "runtime-env install --fresh" in hint
    assert "pip install segmentation-models-pytorch" in _smp_import_hint(
        ModuleNotFoundError("x", name="segmentation_models_pytorch")
    )

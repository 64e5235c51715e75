"""The runtime boundary: code shipped in submission.zip runs on Python 3.9 / torch 1.8.

Checks ``oncloudn/runtime/*.py`` and ``submission/main.py``: Python 3.9 syntax (vermin and
ruff with a py39 target), imports limited to the standard library and the runtime's
packages, no torch API newer than 1.8, no Python 3.10+ string methods or statements.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME_DIR = REPO / "oncloudn" / "runtime"
MAIN = REPO / "submission" / "main.py"
SHIPPED = sorted(RUNTIME_DIR.glob("*.py")) + [MAIN]

# Third-party packages present in the competition runtime that shipped code may import.
RUNTIME_ALLOWLIST = frozenset(
    {
        "numpy",
        "torch",
        "scipy",
        "rasterio",
        "PIL",
        "tifffile",
        "segmentation_models_pytorch",
        "skimage",
        "pandas",
        "affine",
    }
)

# Substrings that betray an API newer than the runtime's (torch 1.8, Python 3.9).
BANNED_APIS = (
    "inference_mode",  # torch 1.9
    "weights_only",  # torch.load argument of torch 1.13
    "torch.compile",  # torch 2.0
    "torch.func",  # torch 2.0
    "torch.amp",  # torch 1.10; 1.8 has torch.cuda.amp only
    "torch.export",  # torch 2.1
    "torch.library",
    "scaled_dot_product_attention",  # torch 2.0
    "torch.special",  # torch 1.9
    "torch.linalg.vector_norm",  # torch 1.9
    "removeprefix",  # 3.9+ only: kept out so shipped code stays 3.8-portable
    "removesuffix",
    "zip(strict",
    "strict=True",
    "pairwise(",  # itertools 3.10
    "aiter(",
    "anext(",
    "bisect_key",
    "ExceptionGroup",
    "tomllib",  # 3.11
    "typing.Self",
    "from typing import Self",
    "TypeAlias",  # 3.10
    "ParamSpec",
    "kw_only=",  # dataclasses 3.10
    "slots=True",  # dataclasses 3.10
)


VERMIN_ARGS = ["--no-tips", "--violations", "--eval-annotations", "--feature", "union-types"]
VERMIN_ARGS += ["-t=3.9-"]


def _module_roots(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, node.module or "", node.level


def test_shipped_files_exist() -> None:
    assert MAIN.exists() and len(SHIPPED) > 8


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_imports_stay_inside_the_runtime(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    stdlib = set(sys.stdlib_module_names)
    for lineno, module, level in _module_roots(tree):
        where = f"{path.name}:{lineno} imports {module or '.'}"
        if level:
            assert path != MAIN, where + " (main.py must import oncloudn.runtime absolutely)"
            continue
        root = module.split(".")[0]
        if root == "oncloudn":
            assert path == MAIN, where + ": runtime modules import each other relatively"
            assert module.startswith("oncloudn.runtime"), where + ": only oncloudn.runtime ships"
            continue
        assert root in stdlib or root in RUNTIME_ALLOWLIST, (
            where + f": not in the standard library nor the runtime's {sorted(RUNTIME_ALLOWLIST)}"
        )


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_no_api_newer_than_the_runtime(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    found = [api for api in BANNED_APIS if api in source]
    assert not found, f"{path.name} uses {found}, absent from Python 3.9 / torch 1.8"
    tree = ast.parse(source)
    match_nodes = [n for n in ast.walk(tree) if type(n).__name__ in {"Match", "TryStar"}]
    assert not match_nodes, f"{path.name} uses match or except* (Python 3.10+)"


def test_vermin_says_python_3_9() -> None:
    vermin = shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed (pip install vermin)")
    cmd = [vermin, *VERMIN_ARGS]
    result = subprocess.run(
        cmd + [str(RUNTIME_DIR), str(MAIN)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_with_the_py39_target() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    for config in (RUNTIME_DIR / "ruff.toml", MAIN.parent / "ruff.toml"):
        assert 'target-version = "py39"' in config.read_text()
    result = subprocess.run(
        [ruff, "check", "--no-cache", str(RUNTIME_DIR), str(MAIN)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(REPO),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_vermin_catches_a_violation(tmp_path: Path) -> None:
    """The vermin check can fail: a 3.10 union type and a match statement are reported."""
    vermin = shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed")
    union = tmp_path / "union.py"
    union.write_text("def f(x: int | None) -> None:\n    pass\n")
    match = tmp_path / "match.py"
    match.write_text("match 1:\n    case 1:\n        pass\n")
    for bad in (union, match):
        result = subprocess.run([vermin, *VERMIN_ARGS, str(bad)], capture_output=True, timeout=60)
        assert result.returncode != 0, bad.name

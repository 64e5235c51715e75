"""The package's layers: imports point down only, no package cycle, library imports at the top.

Every ``import`` in ``oncloudn/**/*.py`` counts, at module level or inside a function. An
import of a higher layer fails, and so does a top-level module missing from ``LAYERS`` (add
new packages there, with a comment when their place is not obvious). Units of one layer may
import each other only without forming a cycle.

An import inside a function must say why with a ``# lazy: <reason>`` comment (an optional
dependency, a heavy import kept off a fast path such as ``oncloudn --help``), either on one of
its own lines or on the comment line directly above the run of consecutive imports it
belongs to::

    def run(args):
        # lazy: keeps `oncloudn --help` fast
        from oncloudn.scoring.report import score_folders
        from oncloudn.scoring.leaderboard import record_run

Everything else sits at the module's top.
``tests/runtime/test_rt_boundary.py`` checks the runtime's own boundary (what ships in the zip).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "oncloudn"

# Top-level modules of ``oncloudn`` (packages and single files) -> layer; lower layers never
# import higher ones. "" is ``oncloudn/__init__.py`` itself.
LAYERS = {
    "": 0,  # oncloudn/__init__.py holds only __version__ and imports nothing
    "runtime": 0,  # ships inside submission.zip; imports nothing else from oncloudn
    "errors": 1,
    "hashing": 1,
    "config": 1,  # dataclass configs + YAML; needs only errors and runtime.atomic
    "data": 2,
    "scoring": 3,  # metric, the runtime's prediction checks, reports, leaderboard
    "models": 4,
    "training": 5,
    "inference": 5,
    "teachers": 5,  # planned: nnU-Net / ONNX teachers, beside training and inference
    "export": 5,  # planned: ONNX / OpenVINO export
    "submission": 6,  # pack, the run-local sandbox and run
    "demo": 7,  # oncloudn/demo/ drives data .. submission; only the CLI calls it
    "notebook": 7,  # oncloudn/notebook.py: what notebooks/*.ipynb call (demo-level helpers)
    "cli": 8,
}

LAZY_COMMENT = re.compile(r"#\s*lazy:\s*\S")


def module_name(path: Path, package: Path) -> str:
    """``oncloudn.a.b`` for ``package/a/b.py`` (``oncloudn.a`` for ``package/a/__init__.py``)."""
    parts = [package.name, *path.relative_to(package).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The top-level module a dotted name belongs to (``""`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported_modules(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute names of the ``oncloudn`` modules an import statement reaches."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    # ``from oncloudn import demo`` reaches the sub-module, ``from x import name`` the module.
    return [f"{target}.{alias.name}" for alias in node.names] + [target]


def _is_import(node: ast.AST) -> bool:
    return isinstance(node, (ast.Import, ast.ImportFrom))


def unexplained_function_imports(tree: ast.AST, lines: list[str]) -> list[int]:
    """Line numbers of imports inside a function that no ``# lazy: <reason>`` explains."""
    found = []
    functions = [
        n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    for function in functions:
        for parent in ast.walk(function):
            for field in ("body", "orelse", "finalbody"):
                block = getattr(parent, field, None)
                if isinstance(block, list):
                    found += _unexplained_in_block(block, lines)
    return sorted(set(found))


def _unexplained_in_block(block: list[ast.stmt], lines: list[str]) -> list[int]:
    """Imports of one statement list that carry no reason, on their lines or above their run."""
    found = []
    run_reason = False  # the current run of consecutive imports has a reason above it
    for index, node in enumerate(block):
        if not _is_import(node):
            continue
        previous = block[index - 1] if index else None
        if previous is None or not _is_import(previous) or previous.end_lineno != node.lineno - 1:
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            run_reason = above.startswith("#") and bool(LAZY_COMMENT.search(above))
        own = lines[node.lineno - 1 : node.end_lineno]
        if not run_reason and not any(LAZY_COMMENT.search(line) for line in own):
            found.append(node.lineno)
    return found


def scan(package: Path) -> tuple[list[str], dict[str, set[str]]]:
    """Layer and lazy-import violations of ``package``, and its unit-to-unit import graph."""
    problems, graph = [], {}
    root = package.name
    for path in sorted(package.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        module = module_name(path, package)
        unit = unit_of(module)
        where = path.relative_to(package.parent)
        if unit not in LAYERS:
            problems.append(f"{where}: top-level module {unit!r} has no layer; add it to LAYERS")
            continue
        for lineno in unexplained_function_imports(tree, source.splitlines()):
            problems.append(
                f"{where}:{lineno}: import inside a function; move it to the module's top or "
                "say why with `# lazy: <reason>` on its line or the line above its imports"
            )
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = imported_modules(node, module, path.name == "__init__.py")
            for target in targets:
                if target != root and not target.startswith(root + "."):
                    continue
                other = unit_of(target)
                if other not in LAYERS:
                    if target is targets[-1] or isinstance(node, ast.Import):
                        problems.append(
                            f"{where}:{node.lineno}: imports {target}, whose top-level module "
                            f"{other!r} has no layer; add it to LAYERS"
                        )
                    continue
                if other == unit:
                    continue
                graph.setdefault(unit, set()).add(other)
                if LAYERS[other] > LAYERS[unit]:
                    problems.append(
                        f"{where}:{node.lineno}: {unit or root} (layer {LAYERS[unit]}) imports "
                        f"{target} (layer {LAYERS[other]}); imports must point down the layers"
                    )
    return sorted(set(problems)), graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``[]`` when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


def test_imports_follow_the_layers() -> None:
    problems, _ = scan(PACKAGE)
    assert not problems, "\n".join(problems)


def test_no_package_cycle() -> None:
    _, graph = scan(PACKAGE)
    cycle = find_cycle(graph)
    assert not cycle, "package cycle: " + " -> ".join(name or "oncloudn" for name in cycle)


def test_every_top_level_module_has_a_layer() -> None:
    units = {unit_of(module_name(p, PACKAGE)) for p in PACKAGE.rglob("*.py")}
    assert units - set(LAYERS) == set()
    assert {"runtime", "data", "scoring", "models", "submission", "cli"} <= units


def _write(package: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # a lower layer importing a higher one, even inside a function with a reason
            {
                "scoring/report.py": "def f():\n"
                "    from oncloudn.submission import checks  # lazy: hides a cycle\n"
            },
            r"scoring \(layer 3\) imports oncloudn.submission.checks \(layer 6\)",
        ),
        (  # a relative import resolves to the same check
            {"data/__init__.py": "", "data/x.py": "from ..models import folder\n"},
            r"data \(layer 2\) imports oncloudn.models.folder",
        ),
        (  # ``from oncloudn import demo`` reaches the demo module
            {"models/m.py": "from oncloudn import demo\n"},
            r"models \(layer 4\) imports oncloudn.demo \(layer 7\)",
        ),
        (  # a new top-level package must be placed
            {"newpkg/__init__.py": "import os\n"},
            r"top-level module 'newpkg' has no layer",
        ),
        (  # importing an unplaced module
            {"cli/c.py": "import oncloudn.mystery\n"},
            r"imports oncloudn.mystery, whose top-level module 'mystery' has no layer",
        ),
        (  # an import inside a function without a reason
            {"data/y.py": "def f():\n    import numpy\n"},
            r"data/y.py:2: import inside a function",
        ),
        (  # a reason above one run of imports does not cover a later run
            {
                "data/z.py": "def f():\n    # lazy: heavy\n    import numpy\n    x = 1\n"
                "    import scipy\n"
            },
            r"data/z.py:5: import inside a function",
        ),
        (  # nor does a comment that is not a reason
            {"data/w.py": "def f():\n    # numpy is heavy\n    import numpy\n"},
            r"data/w.py:3: import inside a function",
        ),
    ],
)
def test_scan_catches_violations(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    package = _write(tmp_path / "oncloudn", {"__init__.py": "", **files})
    problems, _ = scan(package)
    assert any(re.search(expected, p) for p in problems), problems


def test_scan_accepts_downward_and_reasoned_lazy_imports(tmp_path: Path) -> None:
    package = _write(
        tmp_path / "oncloudn",
        {
            "__init__.py": "",
            "cli/c.py": "import oncloudn.scoring.report\n"
            "def f():\n    from oncloudn.demo import run  # lazy: keeps --help fast\n"
            "def g():\n    if True:\n        # lazy: keeps --help fast\n"
            "        import oncloudn.data.sample\n        from oncloudn.models import (\n"
            "            folder,\n        )\n",
            "scoring/report.py": "from oncloudn.data import chips\nfrom . import metric\n",
            "runtime/x.py": "from .atomic import atomic_path\n",
        },
    )
    assert scan(package)[0] == []


def test_find_cycle() -> None:
    assert find_cycle({"training": {"inference"}, "inference": {"models"}}) == []
    cycle = find_cycle({"training": {"inference"}, "inference": {"training"}})
    assert cycle == ["inference", "training", "inference"]
    # Same-layer units may import each other one way; both ways is a cycle the scan reports.
    package_graph = {"scoring": {"submission"}, "submission": {"scoring"}}
    assert find_cycle(package_graph) == ["scoring", "submission", "scoring"]

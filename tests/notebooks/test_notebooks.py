"""The notebooks in ``notebooks/`` execute without error (nbclient, CI sizes).

Both run in one working folder, so the second reuses the tiny sample model the first trained.
Needs the ``notebooks`` extra (nbclient, ipykernel, matplotlib); skipped without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[notebooks]'")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[notebooks]'")
pytest.importorskip("ipykernel", reason="pip install -e '.[notebooks]'")
pytest.importorskip("matplotlib", reason="pip install -e '.[notebooks]'")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ORDER = ("compare_postprocessing.ipynb", "getting_started.ipynb")
TIMEOUT_S = 900


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


@pytest.mark.parametrize("name", ORDER)
def test_notebook_executes(name, work_dir, monkeypatch):
    monkeypatch.setenv("ONCLOUDN_NOTEBOOK_CI", "1")
    monkeypatch.setenv("ONCLOUDN_NOTEBOOK_WORK", str(work_dir))
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(filter(None, [str(NOTEBOOKS.parent), os.environ.get("PYTHONPATH")])),
    )
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [
        o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors


@pytest.mark.parametrize("name", ORDER)
def test_notebooks_are_stored_without_outputs(name):
    data = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
    for cell in data["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
                f"{name} holds outputs; strip them (e.g. jupyter nbconvert --clear-output)"
            )

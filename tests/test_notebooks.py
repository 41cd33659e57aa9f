"""Every notebook runs headless from top to bottom, and is committed without outputs.

Each runs in a fresh kernel of this Python (jupyter_client starts the ``python3`` kernel
with ``sys.executable``), in a temporary folder, with ``QUICK = True`` and ``OUT_DIR``
injected after the cell tagged ``parameters`` (as papermill does), so nothing is written
into the repository.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def with_parameters(nb: nbformat.NotebookNode, source: str) -> nbformat.NotebookNode:
    """``nb`` with a code cell of ``source`` after its ``parameters`` cell (or first code cell)."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    tagged = [i for i in code if "parameters" in nb.cells[i].metadata.get("tags", [])]
    at = (tagged or code or [-1])[0] + 1
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(at, cell)
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path):
    nb = with_parameters(nbformat.read(path, as_version=4),
                         f"QUICK = True\nOUT_DIR = {str(tmp_path / 'out')!r}")
    # raises CellExecutionError, with the cell and its traceback, on the first failing cell
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert "widgets" not in nb.metadata  # saved widget state makes files megabytes


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/*.ipynb found"

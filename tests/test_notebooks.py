"""Every notebook runs headless from top to bottom, and is committed without outputs.

Each runs in a fresh kernel of this Python (jupyter_client starts the ``python3`` kernel
with ``sys.executable``), in a temporary folder, with ``QUICK = True`` and ``OUT_DIR``
injected after the cell tagged ``parameters`` (as papermill does), so nothing is written
into the repository. No cell may show MediaPipe's C++ log lines.
"""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# absl/glog lines ("W0000 00:00:1796117375.090600 27165 face_landmarker_graph.cc:181] ..."),
# absl's "Logging before InitGoogle()", TFLite's "INFO: Created TensorFlow Lite XNNPACK ..."
MEDIAPIPE_LOG = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|InitGoogle|TensorFlow Lite", re.M)


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
    logs = [o.text for cell in nb.cells for o in cell.get("outputs", [])
            if o.get("name") == "stderr" and MEDIAPIPE_LOG.search(o.text)]
    assert not logs, logs[0][:500]


def test_finding_a_face_prints_nothing_on_stderr():
    """What keeps MediaPipe's C++ logs out of the notebooks (and the CLI's stderr, and the app's
    log): a new process, a FaceFinder, one face found; a real warning still gets through."""
    code = ("import warnings\nfrom bsviz.assets import example_paths\n"
            "from bsviz.vision.faces import FaceFinder\n"
            "with FaceFinder() as finder:\n    finder.find(example_paths()[0])\n"
            "warnings.warn('a real warning')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"<string>:\d+: UserWarning: a real warning\n", result.stderr), result.stderr


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

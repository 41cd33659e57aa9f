"""Notebook 01 in JupyterLab in a real browser (headless chromium, driven by playwright).

What only a browser shows: a slider moves a value that is off its step and sends it back as
if the user had moved it, JupyterLab's dialogs on first open, the explorer's layout on common
screens (the file browser open), and the face redrawn when a slider is dragged. JupyterLab
serves a temporary copy of the notebook (``QUICK = True``, with two probe cells appended that
count the explorer's redraws and print the kernel's state), on a free localhost port; its
settings, workspaces and runtime files stay in that folder too. Screenshots go to
``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
from PIL import Image
from test_notebooks import with_parameters

from bsviz.ui.explorer import load_presets

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_blendshape_explorer.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# (width, height, controls beside the face): with the file browser open, a notebook at 1024 px
# has room for one of them a row.
SCREENS = ((1280, 800, True), (1920, 1080, True), (1024, 768, False))

# Appended to the notebook: count the explorer's redraws, then print what the kernel holds.
COUNT_DRAWS = """\
import json
draws = []
draw = explorer._draw
explorer._draw = lambda *args, **kwargs: (draws.append(1), draw(*args, **kwargs))"""
PRINT_STATE = """\
mesh, now = explorer.figure.data[0], explorer.current_vertices()
shown = np.stack([np.asarray(mesh.x), np.asarray(mesh.y), np.asarray(mesh.z)], axis=1)
chin = int(rig.deltas[rig.names.index("jawOpen"), :, 1].argmin())  # jawOpen moves it down most
print("STATE", json.dumps({"weights": explorer.weights(), "draws": len(draws),
                           "figure_error_cm": float(np.abs(shown - now).max()),
                           "chin_y": float(now[chin, 1])}))"""

# The kernel of the notebook in the current tab: its status, and the last cell's run count.
KERNEL = "window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel"
LAST_CELL = ("(() => { const cells = window.jupyterapp.shell.currentWidget.content.widgets;"
             " return cells[cells.length - 1]; })()")
# Every slider of the explorer: (name, readout) as the page shows them.
READOUTS = """root => Array.from(root.querySelectorAll('.widget-hslider')).map(
    s => [s.querySelector('.widget-label').textContent, s.querySelector('.widget-readout').textContent])"""
# Visible controls of the explorer whose text does not fit (cut off, or squeezed to nothing).
CUT_OFF = """root => Array.from(root.querySelectorAll(
        '.widget-label, .widget-label-basic, .widget-readout, button, select'))
    .filter(e => e.offsetParent !== null && e.textContent.trim() !== '')
    .filter(e => e.scrollWidth > e.clientWidth + 1 || e.getBoundingClientRect().width < 8)
    .map(e => e.textContent.trim())"""

# The explorer's two parts, controls and face: side by side, not one above the other.
SIDE_BY_SIDE = """root => { const [controls, face] = Array.from(root.children, e => e.getBoundingClientRect());
    return face.left >= controls.right && face.top < controls.bottom; }"""

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="no chromium (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook_copy(folder: Path) -> Path:
    """Notebook 01 in ``folder``: QUICK, writing into ``folder``, with the probe cells appended."""
    nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4),
                         f"QUICK = True\nOUT_DIR = {str(folder / 'out')!r}")
    nb.cells += [nbformat.v4.new_code_cell(COUNT_DRAWS), nbformat.v4.new_code_cell(PRINT_STATE)]
    path = folder / NOTEBOOK.name
    nbformat.write(nb, path)
    return path


def jupyter_env(folder: Path) -> dict[str, str]:
    """An environment whose JupyterLab keeps its settings in ``folder``: no news, no updates."""
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(folder / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(folder / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(folder / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(folder / "runtime")}
    settings = folder / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a copy of notebook 01 on a free localhost port: its notebook URL."""
    folder = tmp_path_factory.mktemp("lab")
    notebook, token, port = notebook_copy(folder), secrets.token_hex(16), free_port()
    command = [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser",
               "--allow-root", "--ServerApp.ip=127.0.0.1", f"--port={port}",
               f"--ServerApp.token={token}", f"--ServerApp.root_dir={folder}",
               "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None"]
    log = folder / "jupyter.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=jupyter_env(folder), stdout=out,
                                   stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                time.sleep(0.5)
        yield f"{base}/lab/tree/{notebook.name}?token={token}"
    finally:
        process.terminate()  # the server shuts its kernels down first
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def opened(lab):
    """The notebook open in chromium at 1280x800, every cell run: the ``page``, the ``dialogs``
    it showed on opening and the kernel's ``first_state`` once the cells had run."""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(90_000)  # the machine may be busy
            page.goto(lab)
            page.wait_for_function(f"{KERNEL}?.status === 'idle'")
            time.sleep(2)  # JupyterLab's start-up dialogs come a moment after the kernel
            dialogs = page.locator(".jp-Dialog").all_inner_texts()
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(f"{LAST_CELL}.model.executionCount > 0 && "
                                   f"{KERNEL}.status === 'idle'")
            yield SimpleNamespace(page=page, dialogs=dialogs, first_state=kernel_state(page))
        finally:
            browser.close()


def settle(page) -> None:
    """Wait for the kernel to be idle and the browser to have drawn and answered what it got."""
    page.wait_for_function(f"{KERNEL}.status === 'idle'")
    time.sleep(1.5)
    page.wait_for_function(f"{KERNEL}.status === 'idle'")


def kernel_state(page) -> dict:
    """Run the notebook's last cell (it prints the explorer's state) and read what it printed."""
    settle(page)
    runs = page.evaluate(f"{LAST_CELL}.model.executionCount")
    page.evaluate("(() => { const nb = window.jupyterapp.shell.currentWidget.content;"
                  " nb.activeCellIndex = nb.widgets.length - 1;"
                  " return window.jupyterapp.commands.execute('notebook:run-cell'); })()")
    page.wait_for_function(f"{LAST_CELL}.model.executionCount > {runs} && "
                           f"{LAST_CELL}.model.outputs.length > 0 && {KERNEL}.status === 'idle'")
    text = page.evaluate(f"{LAST_CELL}.model.outputs.get(0).toJSON().text")
    return json.loads(text.split("STATE", 1)[1])


def explorer(page):
    return page.locator(".bsviz-explorer")


def face_pixels(page) -> np.ndarray:
    """The explorer's 3D face as the browser draws it: (H, W, 3) uint8."""
    shot = explorer(page).locator(".js-plotly-plot").screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))


@pytest.fixture
def page(opened):
    return opened.page


def test_jupyterlab_opens_without_a_dialog(opened):
    assert opened.dialogs == [], "run scripts/setup.sh: it removes the unbuilt extension"


def test_weights_set_from_code_stay_as_the_cell_printed(opened):
    state = opened.first_state
    assert {n: v for n, v in state["weights"].items() if v} == {
        "browInnerUp_L": 1.0, "browInnerUp_R": 1.0, "jawOpen": 0.6, "mouthFunnel": 0.5}
    assert state["figure_error_cm"] < 1e-4


def test_a_preset_lands_snapped_and_redraws_once(page):
    anger = load_presets()["anger"]
    assert page.locator(".bsviz-explorer .widget-checkbox input").first.is_checked()  # link L/R
    before = kernel_state(page)["draws"]
    explorer(page).locator(".widget-dropdown select").select_option("anger")
    state = kernel_state(page)
    for name, value in state["weights"].items():
        assert abs(value - round(anger.get(name, 0.0), 2)) <= 0.005, (name, value, anger[name])
    assert state["draws"] == before + 1 and state["figure_error_cm"] < 1e-4
    shown = dict(explorer(page).evaluate(READOUTS))
    assert {n: shown[n] for n in anger} == {n: f"{v:.2f}" for n, v in state["weights"].items()}


def test_dragging_jaw_open_moves_the_face(page):
    settle(page)
    before, pixels = kernel_state(page), face_pixels(page)
    explorer(page).get_by_text("jaw", exact=True).click()  # the accordion's jaw section
    slider = explorer(page).locator(".widget-hslider").filter(
        has=page.locator(".widget-label", has_text="jawOpen"))
    handle, track = slider.locator(".noUi-handle"), slider.locator(".noUi-target")
    handle.scroll_into_view_if_needed()
    grip, box = handle.bounding_box(), track.bounding_box()
    y = grip["y"] + grip["height"] / 2
    page.mouse.move(grip["x"] + grip["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.8 * box["width"], y, steps=8)
    page.mouse.up()
    state = kernel_state(page)
    assert 0.6 < state["weights"]["jawOpen"] < 0.95
    assert state["chin_y"] < before["chin_y"] - 0.5 and state["figure_error_cm"] < 1e-4
    assert state["draws"] > before["draws"]
    changed = np.abs(face_pixels(page).astype(int) - pixels).sum(axis=2) > 30
    assert changed.sum() > 200, "the face on the page did not move"


@pytest.mark.parametrize("width, height, beside", SCREENS, ids=[f"{w}x{h}" for w, h, _ in SCREENS])
def test_the_explorer_fits_the_screen(page, width, height, beside):
    page.set_viewport_size({"width": width, "height": height})
    settle(page)
    root = explorer(page)
    root.scroll_into_view_if_needed()
    assert page.locator(".jp-FileBrowser").first.is_visible()  # the sidebar takes its share
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"notebook01_{width}x{height}.png")
    assert root.evaluate(CUT_OFF) == []
    assert root.evaluate("e => e.scrollWidth <= e.clientWidth + 1")  # nothing sticks out
    assert root.evaluate(SIDE_BY_SIDE) == beside

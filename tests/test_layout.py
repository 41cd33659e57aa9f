"""The package's layout: imports run one way (ui -> fer -> vision -> rig -> base) with no cycle,
inference loads no training code, importing leaves no trace, and the wheel carries its assets."""

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bsviz"
LAYERS = {"bsviz": 0, "bsviz.files": 0, "bsviz.assets": 0, "bsviz.meshes": 0, "bsviz.models": 0,
          "bsviz.rig": 1, "bsviz.vision": 2, "bsviz.fer": 3, "bsviz.ui": 4}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    return max((n for prefix, n in LAYERS.items()
                if module == prefix or module.startswith(prefix + ".")), default=0)


def imports(module: str) -> set[str]:
    """The bsviz modules ``module`` imports anywhere in its file (function-level ones too)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("bsviz")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bsviz"):
            for alias in node.names:  # `from bsviz.fer import data` imports bsviz.fer.data
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found - {module}


GRAPH = {m: imports(m) for m in MODULES}


def test_the_layers_are_the_sub_packages():
    assert {m.split(".")[1] for m in MODULES if m.count(".") >= 1} == {
        "files", "assets", "rig", "vision", "fer", "ui"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module):
    upward = sorted(t for t in GRAPH[module] if layer(t) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports from a higher layer: {upward}"


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def run_python(code: str, cwd: Path, env: dict | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_inference_loads_no_training_code(tmp_path):
    out = run_python(
        "import sys, json\n"
        "import bsviz.fer.predict, bsviz.fer.explain, bsviz.ui.app\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('bsviz'))))", tmp_path)
    loaded = set(json.loads(out))
    training = {"bsviz.fer.train", "bsviz.fer.augment", "bsviz.fer.experiments",
                "bsviz.fer.labels", "bsviz.fer.synth"}
    assert not loaded & training, f"inference pulled in {sorted(loaded & training)}"


def test_importing_any_module_leaves_no_trace(tmp_path):
    """Each bsviz module, imported after the third-party libraries it uses (whose own import
    effects are theirs), changes no environment variable, writes no file into the temp folder,
    the working folder or the home folder, and registers no exit handler."""
    for name in ("home", "tmp", "cwd"):
        (tmp_path / name).mkdir()
    env = {**os.environ, "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp")}
    code = f"""
import atexit, json, os, sys, threading, importlib
import numpy, torch, PIL.Image, cv2, tqdm, trimesh, plotly.graph_objects, ipywidgets, gradio
import matplotlib.figure, matplotlib.ticker
def files():
    return sorted(str(p) for d in {[str(tmp_path / n) for n in ("home", "tmp", "cwd")]!r}
                  for p in __import__("pathlib").Path(d).rglob("*"))
env, before = dict(os.environ), files()
exits, thread_exits = atexit._ncallbacks(), len(threading._threading_atexits)
for name in {sorted(MODULES)!r}:
    importlib.import_module(name)
print(json.dumps({{"env": {{k: v for k, v in os.environ.items() if env.get(k) != v}},
                  "gone": sorted(set(env) - set(os.environ)),
                  "files": sorted(set(files()) - set(before)),
                  "exit_handlers": atexit._ncallbacks() - exits,
                  "thread_exit_handlers": len(threading._threading_atexits) - thread_exits}}))
"""
    trace = json.loads(run_python(code, tmp_path / "cwd", env).strip().splitlines()[-1])
    assert trace == {"env": {}, "gone": [], "files": [], "exit_handlers": 0,
                     "thread_exit_handlers": 0}


def test_wheel_carries_the_assets_and_predicts_from_anywhere(tmp_path):
    """``pip wheel .``, installed into a folder of its own (not editable), run from elsewhere."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w",
                          str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("bsviz-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in ("bsviz/meshes/ict_facekit.npz", "bsviz/models/blendshape_fernet.pt",
                  "bsviz/models/face_landmarker.task", "bsviz/models/expression_presets.json",
                  "bsviz/ui/examples/happy.png", "bsviz/fer/train.py"):
        assert asset in names, f"{asset} is not in {wheel.name}"
    target = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = run_python("import bsviz, bsviz.assets as a; print(bsviz.__file__); "
                       "print(a.rig_path())", elsewhere, env).split()
    assert all(Path(p).is_relative_to(target) for p in where), where
    happy = target / "bsviz" / "ui" / "examples" / "happy.png"
    result = subprocess.run([sys.executable, "-m", "bsviz.ui.cli", "predict", str(happy),
                             "--json"], cwd=elsewhere, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    assert record["faces"][0]["expression"] in ("happy", "neutral", "surprise")

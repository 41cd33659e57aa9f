import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import obj_vertices
from PIL import Image

from bsviz.rig.obj import read_obj
from bsviz.ui.cli import main


def test_blend_writes_the_jaw_open_obj(ict_dir, tmp_path):
    out = tmp_path / "face.obj"
    assert main(["blend", "--set", "jawOpen=1", "--out", str(out)]) == 0
    np.testing.assert_allclose(read_obj(out).vertices, obj_vertices(ict_dir / "jawOpen.obj"),
                               atol=1e-4)


def test_weights_file_and_set_combine(rig, tmp_path):
    (tmp_path / "w.json").write_text(json.dumps({"jawOpen": 1.0, "mouthSmile_L": 0.5}))
    a, b = tmp_path / "a.ply", tmp_path / "b.ply"
    assert main(["blend", "--weights", str(tmp_path / "w.json"), "--set", "jawOpen=0",
                 "--out", str(a)]) == 0
    assert main(["blend", "--set", "mouthSmile_L=0.5", "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_render_all_views(tmp_path, capsys):
    assert main(["render", "--set", "mouthSmile_R=1", "--view", "all", "--size", "96",
                 "--out", str(tmp_path / "f.png")]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["f_front.png", "f_profile.png", "f_three_quarter.png"]
    assert Image.open(tmp_path / "f_front.png").size == (96, 96)


def test_rig_info_lists_the_shapes(capsys):
    assert main(["rig", "info"]) == 0
    out = capsys.readouterr().out
    assert "vertices: 26719" in out and "expression shapes (53)" in out and "jawOpen" in out
    assert "identity shapes (10)" in out


def test_rig_glb_with_animation(tmp_path, capsys):
    frames = [{"jawOpen": t / 4} for t in range(5)]
    (tmp_path / "anim.json").write_text(json.dumps(frames))
    assert main(["rig", "glb", "--animation", str(tmp_path / "anim.json"),
                 "--out", str(tmp_path / "rig.glb")]) == 0
    assert "53 morph targets, 5 animation frames" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["blend", "--set", "jawOpn=1"], "unknown expression shape name(s): jawOpn"),
    (["blend", "--set", "jawOpen=nan"], "NaN"),
    (["blend", "--set", "jawOpen"], "--set expects NAME=NUMBER"),
    (["blend", "--weights", "/no/such.json"], "cannot read weights file"),
    (["blend", "--rig", "/no/such/rig.npz"], "no such rig"),
    (["render", "--out", "/no/such/dir/f.png"], "output folder /no/such/dir does not exist"),
])
def test_errors_are_one_line(tmp_path, capsys, argv, message):
    if "--out" not in argv:
        argv = argv + ["--out", str(tmp_path / "face.obj")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bsviz: error:") and message in err and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_out_of_range_warns_on_stderr(tmp_path, capsys):
    assert main(["blend", "--set", "jawOpen=3", "--out", str(tmp_path / "f.obj")]) == 0
    assert "clamped" in capsys.readouterr().err


def test_console_script_demo(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bsviz.ui.cli", "demo", "--out-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == ["demo_face.glb", "demo_front.png", "demo_profile.png",
                    "demo_rig_animated.glb", "demo_three_quarter.png"]
    front = np.asarray(Image.open(tmp_path / "demo_front.png"))
    assert (front[256, 256] != 255).any()

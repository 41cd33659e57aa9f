import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import obj_vertices
from PIL import Image

from bsviz.assets import example_paths
from bsviz.rig.obj import obj_bytes, read_obj
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


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("bsviz: error:") and "\n" not in err
    return err


def test_rig_from_an_obj_folder_converts_blends_renders_and_exports(rig, tmp_path, capsys):
    folder = tmp_path / "objs"
    folder.mkdir()
    (folder / "neutral.obj").write_bytes(obj_bytes(rig.neutral, rig.triangles))
    for name in ("jawOpen", "mouthSmile_L", "eyeBlink_R"):
        shape = rig.neutral + rig.deltas[rig.names.index(name)]
        (folder / f"{name}.obj").write_bytes(obj_bytes(shape, rig.triangles))
    npz = tmp_path / "r.npz"
    assert main(["rig", "convert", str(folder), str(npz), "--neutral", "neutral.obj"]) == 0
    assert "3 expression and 0 identity shapes" in capsys.readouterr().out

    face = tmp_path / "face.obj"
    assert main(["blend", "--rig", str(npz), "--set", "jawOpen=1", "--out", str(face)]) == 0
    np.testing.assert_allclose(read_obj(face).vertices, read_obj(folder / "jawOpen.obj").vertices,
                               atol=1e-5)
    assert main(["render", "--rig", str(npz), "--set", "mouthSmile_L=1", "--size", "64",
                 "--out", str(tmp_path / "face.png")]) == 0
    assert (np.asarray(Image.open(tmp_path / "face.png")) != 255).any()
    assert main(["rig", "glb", "--rig", str(npz), "--out", str(tmp_path / "rig.glb")]) == 0
    assert "3 morph targets" in capsys.readouterr().out


def test_rig_convert_refuses_other_triangles_and_paths_out_of_the_folder(rig, tmp_path, capsys):
    folder = tmp_path / "objs"
    folder.mkdir()
    (folder / "neutral.obj").write_bytes(obj_bytes(rig.neutral, rig.triangles))
    (folder / "jawOpen.obj").write_bytes(obj_bytes(rig.neutral, rig.triangles[::-1]))
    out = str(tmp_path / "r.npz")
    assert main(["rig", "convert", str(folder), out, "--neutral", "neutral.obj"]) == 2
    assert "jawOpen.obj has other triangles than the neutral" in _error(capsys)
    (folder / "manifest.json").write_text(json.dumps(
        {"neutral": "neutral.obj", "expressions": {"jawOpen": "../jawOpen.obj"}}))
    assert main(["rig", "convert", str(folder), out]) == 2
    assert "'../jawOpen.obj' is not a file name inside" in _error(capsys)
    assert not (tmp_path / "r.npz").exists()


def test_blend_refuses_weights_that_overflow(tmp_path, capsys):
    assert main(["blend", "--set", "identity000=3e38", "--out", str(tmp_path / "x.obj")]) == 2
    assert "NaN or inf vertices" in _error(capsys)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("suffix, format_", [(".jpg", "JPEG"), (".JPEG", "JPEG"),
                                             (".webp", "WEBP"), (".png", "PNG")])
def test_render_writes_the_format_its_extension_names(tmp_path, suffix, format_):
    out = tmp_path / f"face{suffix}"
    assert main(["render", "--size", "48", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == format_ and image.size == (48, 48)


def test_render_refuses_an_unknown_format_and_names_the_path_it_cannot_write(tmp_path, capsys):
    assert main(["render", "--size", "48", "--out", str(tmp_path / "face.gif")]) == 2
    assert "face.gif: unknown image format '.gif' (use .png, .jpg, .jpeg, .webp)" in _error(capsys)
    (tmp_path / "taken.png").mkdir()  # a folder where the image should go
    assert main(["render", "--size", "48", "--out", str(tmp_path / "taken.png")]) == 2
    assert f"{tmp_path / 'taken.png'} is a folder" in _error(capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["taken.png"]


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


@pytest.fixture(scope="module")
def predict_modules():
    """The modules loaded by ``bsviz predict`` on an example image, in a fresh process."""
    code = ("import json, sys\nfrom bsviz.ui.cli import main\n"
            "status = main(['predict', sys.argv[1], '--json'])\n"
            "print(json.dumps({'status': status, 'modules': sorted(sys.modules)}))")
    result = subprocess.run([sys.executable, "-c", code, str(example_paths()[0])],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    ran = json.loads(result.stdout.splitlines()[-1])
    assert ran["status"] == 0
    return set(ran["modules"]) | {name.split(".")[0] for name in ran["modules"]}


@pytest.mark.parametrize("package", [
    "torch",  # the networks run in numpy (fer.numpy_net), the detector in OpenCV
    "plotly", "trimesh", "gradio", "pyrender", "open3d",
    "matplotlib.figure",  # mediapipe's drawing_utils imports pyplot: deferred (vision.faces)
    pytest.param("matplotlib", marks=pytest.mark.xfail(strict=True, reason=(
        "drawing_utils' `import matplotlib.pyplot` imports the matplotlib package (0.2 s)"))),
    "bsviz.fer.train",  # the parser's TrainConfig flags come from the light fer.config
])
def test_predict_loads_no_package_it_does_not_need(predict_modules, package):
    assert package not in predict_modules

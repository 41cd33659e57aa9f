"""The web app: its handlers called as plain functions (bad input, outputs, editing, video),
the ``bsviz app`` start-up check, and one end-to-end test in headless chromium (playwright)."""

import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import cv2
import httpx
import numpy as np
import pygltflib
import pytest
import trimesh
from conftest import compact_glb_vertices
from PIL import Image

from bsviz.assets import example_paths, model_path
from bsviz.fer.checkpoints import CheckpointError
from bsviz.rig.blend import blend
from bsviz.rig.obj import read_obj
from bsviz.ui import app
from bsviz.ui.cli import exposure_warning, main, parse_auth

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
HAPPY = Path("ck+48") / "happy" / "S010_006_00000013.png"
K = 53


@pytest.fixture(scope="session")
def checkpoint(request, tmp_path_factory) -> Path:
    """The shipped model, or until it ships a tiny two-stream one trained for one epoch on
    conftest's 105-image CK+ (~10 s)."""
    if model_path().exists():
        return model_path()
    from bsviz.fer.checkpoints import pack_checkpoint
    from bsviz.fer.train import TrainConfig, train

    data, out = request.getfixturevalue("tiny_ck"), tmp_path_factory.mktemp("tiny_model")
    train(TrainConfig(kind="two_stream", dataset="ck+", data_dir=str(data),
                      labels=str(data / "ck.npz"), out_dir=str(out / "run"),
                      widths=(4, 4, 8, 8, 8, 8, 16), feature_dim=16, epochs=1, augment=False,
                      device="cpu", progress=False))
    return pack_checkpoint(out / "run" / "best.pt", out / "model.pt")


@pytest.fixture(scope="session")
def engine(checkpoint) -> app.Engine:
    return app.load(checkpoint)


def png_zeros(path: Path, width: int, height: int) -> Path:
    """A valid black grayscale PNG written row by row: 20000 x 20000 px is a 1.7 MB file
    that decodes to 400 MB (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    z = zlib.compressobj(1)
    row = bytes(width + 1)  # filter byte 0, then the pixels
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def inputs(shared, tmp_path_factory) -> Path:
    """Good and bad uploads, one file each."""
    d = tmp_path_factory.mktemp("inputs")
    happy = shared / "data" / HAPPY
    raw = happy.read_bytes()
    (d / "notes.txt").write_text("not a photo\n")
    (d / "truncated.png").write_bytes(raw[: len(raw) // 2])
    (d / "corrupt.png").write_bytes(raw[:100] + bytes(b ^ 0x55 for b in raw[100:400]) + raw[400:])
    png_zeros(d / "bomb.png", 20000, 20000)
    png_zeros(d / "large.png", 9000, 6000)
    Image.new("RGB", (1, 1)).save(d / "one_pixel.png")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(d / "blank.png")
    shutil.copy(happy, d / "gray.png")
    Image.fromarray(np.asarray(Image.open(happy), np.uint16) * 257).save(d / "gray16.png")
    render = {p.stem: Image.open(p).convert("RGB") for p in example_paths()}
    rgba = render["happy"].convert("RGBA")
    rgba.putalpha(200)
    rgba.save(d / "rgba.png")
    pair = Image.new("RGB", (512, 256))
    pair.paste(render["neutral"].resize((180, 180)), (40, 38))
    pair.paste(render["happy"], (256, 0))
    pair.save(d / "two_faces.png")
    return d


@pytest.mark.parametrize("name, message", [
    ("notes.txt", "notes.txt is not an image file"),
    ("truncated.png", "cannot decode truncated.png: the file is damaged or truncated"),
    ("corrupt.png", "cannot decode corrupt.png: the file is damaged or truncated"),
    ("bomb.png", "bomb.png is too large to open safely"),
    ("large.png", "large.png is too large: 9000x6000 px (54 Mpx); the limit is 50 Mpx"),
    ("one_pixel.png", "one_pixel.png is too small: 1x1 px"),
    ("blank.png", "no face found in blank.png (200x200 RGB)"),
])
def test_bad_input_gives_its_message_and_writes_nothing(engine, inputs, name, message,
                                                        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(inputs.iterdir())
    with pytest.warns(UserWarning, match=re.escape(message)):  # gr.Warning outside a request
        out = app.on_photo(str(inputs / name))
    assert out[0].startswith(f"Error: {message}")
    assert out[1:6] == (None,) * 5  # no stale face box, label, charts or model
    assert len(out) == 6 + K + 2  # and the face selector, emptied, and its state
    assert out[-1] is None
    assert list(tmp_path.iterdir()) == [] and sorted(inputs.iterdir()) == before


@pytest.mark.parametrize("name, described", [
    ("gray.png", "(48x48 grayscale)"), ("gray16.png", "(48x48 16-bit grayscale)"),
    ("rgba.png", "(256x256 RGBA)")])
def test_gray_16_bit_and_rgba_photos_work(engine, inputs, name, described):
    out = app.on_photo(str(inputs / name))
    assert described in out[0] and not out[0].startswith("Error")
    assert sum(out[2].values()) == pytest.approx(1, abs=1e-4)


def test_webcam_frames_are_checked_and_analysed(engine):
    frame = np.asarray(Image.open(example_paths()[0]).convert("RGB"))
    assert "in the webcam frame (256x256)" in app.on_photo(frame)[0]
    with pytest.warns(UserWarning, match="the webcam frame is too small: 8x8 px"):
        app.on_photo(np.zeros((8, 8, 3), np.uint8))


def test_several_faces_are_all_analysed_and_pickable(engine, inputs, rig):
    analysis = engine.analyse(inputs / "two_faces.png")
    assert len(analysis.predictions) == 2 and analysis.notes == []
    assert analysis.predictions[0].face.box[0] > 256  # the larger face is the right-hand one
    out = app.on_photo(str(inputs / "two_faces.png"))
    assert out[0].startswith("2 faces found in two_faces.png")
    pick, state = out[-2], out[-1]
    assert len(pick["choices"]) == 2 and pick["value"] == pick["choices"][0]
    second = pick["choices"][1]
    label, weights_plot, compare_plot, glb, *weights = app.on_face(second, state)
    assert weights == analysis.predictions[1].weights.tolist()
    assert max(label, key=label.get) == analysis.predictions[1].expression
    ids, vertices = compact_glb_vertices(glb)
    np.testing.assert_allclose(vertices, blend(rig, weights)[ids], atol=1e-3)  # cm, quantised


def test_example_face_gives_probabilities_weights_and_a_glb(engine, rig):
    status, shown, label, weights_plot, compare_plot, glb, *weights, pick, state = app.on_photo(
        str(example_paths()[0]))
    assert status.startswith("1 face found") and len(pick["choices"]) == 1
    assert not status.startswith("Error") and max(label, key=label.get) in status
    assert set(label) == set(engine.classes)
    assert sum(label.values()) == pytest.approx(1, abs=1e-4)
    assert len(weights) == K and all(0 <= w <= 1 for w in weights)
    assert shown.shape == (app.SHOW_SIZE, app.SHOW_SIZE, 3)
    assert len(weights_plot.data) == 6 and len(compare_plot.data) == 3  # ours, MediaPipe, fit
    assert Path(glb).is_relative_to(engine.out_dir)
    ids, vertices = compact_glb_vertices(glb)  # the drawn vertices, quantised to 2.6 µm
    np.testing.assert_array_equal(ids, np.unique(rig.visible_triangles()))
    np.testing.assert_allclose(vertices, blend(rig, weights)[ids], atol=1e-3)  # cm


def test_sliders_reshape_the_face(engine, rig):
    neutral, open_jaw = [0.0] * K, [0.0] * K
    open_jaw[rig.names.index("jawOpen")] = 1.0
    (ids, a), (_, b) = (compact_glb_vertices(app.on_edit(False, *w)) for w in (neutral, open_jaw))
    moved = np.linalg.norm(b - a, axis=1) > 1e-2  # cm
    assert moved.sum() > 100
    assert np.median(b[moved, 1]) < np.median(rig.neutral[:, 1])  # the lower face moved
    np.testing.assert_allclose(a, rig.neutral[ids], atol=1e-3)
    still_a, still_b = (app.on_still("face.glb", False, *w) for w in (neutral, open_jaw))
    assert still_a.shape == (app.STILL_SIZE, app.STILL_SIZE, 3) and (still_a != still_b).any()
    assert app.on_still(None, False, *neutral) is None
    heat = Path(app.on_edit(True, *open_jaw)).read_bytes()
    assert heat != Path(app.on_edit(False, *open_jaw)).read_bytes()


def test_export_writes_glb_obj_and_weights_json(engine, rig):
    weights = np.linspace(0, 1, K).round(2).tolist()
    glb, obj, weights_json = map(Path, app.on_export(False, *weights))
    assert (glb.name, obj.name, weights_json.name) == (
        "bsviz_face.glb", "bsviz_face.obj", "bsviz_weights.json")
    assert trimesh.load(glb, force="mesh", process=False).vertices.shape == (rig.n_vertices, 3)
    np.testing.assert_allclose(read_obj(obj).vertices, blend(rig, weights), atol=1e-4)
    assert json.loads(weights_json.read_text()) == dict(zip(rig.names, weights))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 2 s, 20 fps WebM: the rig from neutral to a smile and back; frames 18-20 are blank."""
    neutral, happy = (np.asarray(Image.open(example_paths()[0].with_name(n)).convert("RGB"),
                                 np.float32) for n in ("neutral.png", "happy.png"))
    path = tmp_path_factory.mktemp("video") / "clip.webm"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), 20, (256, 256))
    for t in range(40):
        k = np.sin(np.pi * t / 39)
        frame = np.full_like(neutral, 200) if 18 <= t < 21 else neutral * (1 - k) + happy * k
        writer.write(cv2.cvtColor(frame.astype(np.uint8), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_gives_smoothed_weights_and_an_animated_glb(engine, clip, rig):
    with pytest.warns(UserWarning, match="No face in 3 of 40 frames"):
        status, label, timeline, glb, files = app.on_video(str(clip))
    assert status.startswith("40 frames at 20.0 fps from clip.webm")
    assert "No face in 3 of 40 frames (at 0.90, 0.95, 1.00 s)" in status
    assert sum(label.values()) == pytest.approx(1, abs=1e-4) and len(timeline.data) > 7
    gltf = pygltflib.GLTF2().load(glb)
    sampler = gltf.animations[0].samplers[0]
    assert gltf.accessors[sampler.input].count == 40
    assert gltf.accessors[sampler.input].max[0] == pytest.approx(39 / 20)
    assert len(gltf.meshes[0].primitives[0].targets) == rig.n_shapes
    frames = json.loads(Path(files[1]).read_text())["frames"]
    assert [f["face"] for f in frames].count(False) == 3 and len(frames[0]["weights"]) == K
    assert frames[18]["weights"] == frames[17]["weights"]  # no face: the last values hold


def test_bad_video_gives_its_message(engine, inputs, tmp_path):
    with pytest.warns(UserWarning, match="not a readable video file"):
        out = app.on_video(str(inputs / "notes.txt"))
    assert out[0] == "Error: notes.txt is not a readable video file (use MP4 or WebM)"
    with pytest.warns(UserWarning, match="no face found in any of the 40 frames"):
        app.on_video(str(blank_video(tmp_path / "blank.webm")))


def blank_video(path: Path) -> Path:
    """40 grey frames, no face."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), 20, (64, 64))
    for _ in range(40):
        writer.write(np.full((64, 64, 3), 90, np.uint8))
    writer.release()
    return path


def test_app_without_a_model_fails_at_start_naming_the_file(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere.pt"
    assert main(["app", "--model", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"bsviz: error: no such checkpoint: {missing}"
    monkeypatch.setenv(app.MODEL_ENV, str(missing))
    with pytest.raises(CheckpointError, match=str(missing)):
        app.load()


# --------------------------------------------------------------------------- browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(checkpoint: Path, cwd: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``bsviz app ARGS`` serving on a free localhost port, in its own process: its URL."""
    port, log = free_port(), cwd / "app.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "bsviz.ui.cli", "app", "--port", str(port),
                                    "--model", str(checkpoint), *args],
                                   cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """``bsviz app`` serving on a free localhost port, in its own process."""
    with serving(checkpoint, tmp_path_factory.mktemp("server")) as served:
        yield served


def test_uploads_over_the_size_limit_are_refused(server):
    url, process = server
    big = ("big.png", bytes(30 * 2**20), "image/png")  # MAX_FILE_SIZE is 25 MB
    response = httpx.post(f"{url}gradio_api/upload", files={"files": big}, timeout=60)
    assert response.status_code == 413 and process.poll() is None


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no chromium (apt-get install chromium)")
def test_browser_upload_edit_and_bad_file(server, shared, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    url, process = server
    glb_responses = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            page.set_default_timeout(60_000)  # the machine may be busy
            page.on("response", lambda r: glb_responses.append(r.status)
                    if r.url.endswith(".glb") else None)
            page.goto(url)
            upload = page.locator("#upload input[type=file]")
            upload.set_input_files(shared / "data" / HAPPY)
            # the status box may not be there yet on a busy machine: wait for it, then its text
            page.wait_for_function("document.querySelector('#status textarea')?.value > ''")
            shown = page.locator("#expression [data-testid=label-output-value]").inner_text()
            if model_path().exists():
                assert shown == "happy"
            else:
                assert shown in {"anger", "contempt", "disgust", "fear", "happy", "sadness",
                                 "surprise"}
            link = page.locator("#model3d [data-testid=model3d-download-link]")
            link.wait_for()
            first = link.get_attribute("href")
            assert first.endswith("face.glb")
            canvas = page.locator("#model3d canvas[data-engine^=Babylon]")
            canvas.wait_for()
            assert not page.locator("#still img").count()  # rendered only when asked
            page.locator("#render-still").click()
            page.wait_for_function("() => document.querySelector('#still img')")

            page.get_by_text("jaw (4)").click()
            slider = page.locator("#w-jawOpen input[type=range]")
            slider.scroll_into_view_if_needed()
            box = slider.bounding_box()
            page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] - 1, box["y"] + box["height"] / 2, steps=5)
            page.mouse.up()
            page.wait_for_function("(document.querySelector('[data-testid=model3d-download-link]')"
                                   f"?.href ?? '{first}') != '{first}'")
            assert slider.input_value() == "1"
            time.sleep(1)  # let the viewer draw the new model
            pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot())))
            assert pixels[..., :3].std() > 10  # a face, not an empty canvas
            assert glb_responses and set(glb_responses) == {200}
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=ARTIFACTS / "app.png", full_page=True)

            text = tmp_path / "notes.txt"
            text.write_text("not a photo\n")
            page.locator("#upload button[aria-label='Clear']").click()
            upload.set_input_files(text)
            page.wait_for_function("document.querySelector('#status textarea')?.value"
                                   "?.startsWith('Error: notes.txt is not an image file')")
            page.get_by_text("notes.txt is not an image file").first.wait_for()  # the toast
            page.screenshot(path=ARTIFACTS / "app_bad_file.png")
        finally:
            browser.close()
    assert process.poll() is None  # still serving


# --------------------------------------------------------------------------- running for days


def test_sweep_keeps_the_folder_under_its_cap_oldest_first(tmp_path):
    now = time.time()

    def file(name: str, age: float, size: int = 4000) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(size))
        os.utime(path, (now - age, now - age))
        return path

    stale = file("stale.txt", 1000, 10)  # past the age limit, though under the cap
    a, b = file("a/face.glb", 200), file("b/face.glb", 100)
    recent = [file("c/face.glb", 30), file("d/image.jpeg", 5)]  # the last minute
    (tmp_path / "empty_old").mkdir()
    os.utime(tmp_path / "empty_old", (now - 120, now - 120))
    (tmp_path / "empty_new").mkdir()  # a request may be about to fill it
    limits = {"keep_seconds": 60, "max_age_seconds": 600}
    assert app.sweep(tmp_path, 9000, **limits) == [str(stale), str(a), str(b)]
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == recent
    assert not (tmp_path / "empty_old").exists() and (tmp_path / "empty_new").is_dir()
    assert app.sweep(tmp_path, 9000, **limits) == []
    assert app.sweep(tmp_path, 1000, **limits) == []  # the last minute stays, even over the cap
    assert app.sweep(tmp_path, 1000, keep_seconds=10, max_age_seconds=600) == [str(recent[0])]


def test_the_cap_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(app.CACHE_ENV, raising=False)
    assert app.cache_bytes() == app.CACHE_MB * 2**20
    monkeypatch.setenv(app.CACHE_ENV, "1.5")
    assert app.cache_bytes() == int(1.5 * 2**20)
    for bad in ("0", "-3", "lots", "nan"):
        monkeypatch.setenv(app.CACHE_ENV, bad)
        with pytest.raises(ValueError, match=f"^BSVIZ_APP_CACHE_MB must be a positive number "
                                             f"of megabytes, got '{bad}'$"):
            app.cache_bytes()


def test_many_edits_leave_a_bounded_temp_folder(engine, monkeypatch):
    cap = 4 * 2**20
    monkeypatch.setattr(engine, "cache_bytes", cap)
    monkeypatch.setattr(app, "KEEP_SECONDS", 0)  # all 30 are written within the minute kept
    rng = np.random.default_rng(0)
    glbs = [Path(app.on_edit(False, *rng.random(K).round(2))) for _ in range(30)]
    files = [p for p in engine.out_dir.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= cap
    assert len(files) <= cap // glbs[-1].stat().st_size and glbs[-1] in files  # the newest stay


def test_tidy_forgets_the_files_gone_from_disk(engine, tmp_path):
    kept = tmp_path / "kept.glb"
    kept.write_bytes(b"glTF")
    paths = {str(kept), str(tmp_path / "gone.glb")}
    app._tidy(SimpleNamespace(temp_file_sets=[paths]))  # what Gradio's Blocks holds
    assert paths == {str(kept)}


@pytest.fixture(scope="module")
def auth_server(checkpoint, tmp_path_factory):
    """``bsviz app --auth user:pass:word`` (a password may hold colons)."""
    with serving(checkpoint, tmp_path_factory.mktemp("auth"), "--auth", "user:pass:word") as s:
        yield s[0]


def test_auth_refuses_a_wrong_password_and_serves_the_right_one(auth_server):
    url, data = auth_server, {"data": [False] + [0.0] * K}
    wrong = httpx.post(f"{url}login", data={"username": "user", "password": "pass"})
    assert wrong.status_code == 400
    assert httpx.post(f"{url}gradio_api/call/edit", json=data).status_code == 401
    with httpx.Client(timeout=60) as http:
        right = http.post(f"{url}login", data={"username": "user", "password": "pass:word"})
        assert right.status_code == 200
        event = http.post(f"{url}gradio_api/call/edit", json=data).json()["event_id"]
        body = http.get(f"{url}gradio_api/call/edit/{event}").text
    assert "event: complete" in body and "face.glb" in body


def test_auth_files_and_bad_auth_arguments(tmp_path, capsys):
    logins = tmp_path / "logins.txt"
    logins.write_text("alice:one\n\n  bob:two:three  \n")
    assert parse_auth(["carol:four"], str(logins)) == [
        ("carol", "four"), ("alice", "one"), ("bob", "two:three")]
    (tmp_path / "bad.txt").write_text("alice:one\nbob\n")
    (tmp_path / "blank.txt").write_text("\n\n")
    for args, message in [
            (["--auth", "nocolon"], "--auth expects USER:PASSWORD, neither empty"),
            (["--auth", "user:"], "--auth expects USER:PASSWORD, neither empty"),
            (["--auth-file", str(tmp_path / "bad.txt")],
             f"auth file {tmp_path / 'bad.txt'}, line 2: expected user:password, neither empty"),
            (["--auth-file", str(tmp_path / "blank.txt")],
             f"auth file {tmp_path / 'blank.txt'} holds no user:password line"),
            (["--auth-file", str(tmp_path / "none.txt")],
             f"cannot read auth file {tmp_path / 'none.txt'}: No such file or directory")]:
        assert main(["app", *args]) == 2
        assert capsys.readouterr().err == f"bsviz: error: {message}\n"


def test_serving_beyond_localhost_without_auth_warns(monkeypatch, capsys):
    assert "0.0.0.0 without --auth" in exposure_warning("0.0.0.0", False, [])
    assert "lab-pc.local without --auth" in exposure_warning("lab-pc.local", False, [])
    assert "--share without --auth" in exposure_warning("127.0.0.1", True, [])
    for host in ("127.0.0.1", "localhost", "::1"):
        assert exposure_warning(host, False, []) is None
    assert exposure_warning("0.0.0.0", True, [("u", "p")]) is None
    launched = []
    monkeypatch.setattr(app, "launch", lambda *args, **kwargs: launched.append((args, kwargs)))
    assert main(["app", "--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("bsviz: warning: the app listens on 0.0.0.0") and err.count("\n") == 1
    assert main(["app", "--host", "0.0.0.0", "--auth", "u:p"]) == 0
    assert capsys.readouterr().err == ""
    assert [kwargs["auth"] for _, kwargs in launched] == [None, [("u", "p")]]


def test_the_fitted_rig_is_drawn_over_the_photo_and_exports_posed(engine, rig):
    """The status image shows each face's fitted mesh where the face is; the comparison chart
    has the fitted weights; the posed face exports in the photo's pixels."""
    path = example_paths()[0]
    out = app.on_photo(str(path))
    shown, compare_plot, pick, state = out[1], out[4], out[-2], out[-1]
    plain = np.asarray(Image.open(path).convert("RGB").resize(shown.shape[1::-1]))
    face = state["faces"][0]
    x0, y0, x1, y1 = (np.array(face["box"]) * shown.shape[1] / 256).astype(int)
    changed = np.abs(shown.astype(int) - plain.astype(int)).sum(axis=2) > 30
    assert changed[y0 + 5:y1 - 5, x0 + 5:x1 - 5].mean() > 0.2  # the mesh over the face
    assert [bar.name for bar in compare_plot.data][-1] == "rig fitted to the landmarks"
    obj, fit_json = map(Path, app.on_posed(pick["value"], state))
    posed = read_obj(obj).vertices
    fit = json.loads(fit_json.read_text())
    assert set(fit["pose"]) == {"yaw", "pitch", "roll"} and fit["nme"] < 0.05
    landmarks = engine.predictor.predict(str(path)).face.landmarks
    ids = engine.predictor.fitter.ids
    assert np.linalg.norm(posed[ids, :2] - landmarks[:, :2], axis=1).mean() < 5  # pixels

"""The bsviz web app (Gradio): a face photo or video in; the expression, the 53 blendshape
weights and the 3D face out, editable with sliders and exportable.

``bsviz app`` (or ``python -m bsviz.ui.app``) calls ``launch``, which loads the model
(``--model``, else ``$BSVIZ_MODEL``, else the shipped one) into an ``Engine`` and serves
``build_demo()`` on 127.0.0.1. Importing this module does nothing else: the engine makes its own
temp folder, and ``launch`` points Gradio's uploads there and turns Gradio's analytics off, so
nothing is looked up outside; the folder is removed when the engine closes or the process exits.

The app runs for days in bounded disk and memory. Every file a request leaves in the temp folder
(the engine's GLB, OBJ and JSON files, Gradio's copies of uploads and shown images) is removed
after ``MAX_AGE_SECONDS`` (5 minutes), and the folder is capped at ``$BSVIZ_APP_CACHE_MB``
megabytes (default 512), oldest files first, keeping what was written in the last
``KEEP_SECONDS`` (a minute: what a page was just served): ``sweep``, after each request that
writes files and every ``TIDY_SECONDS`` while serving. Gradio keeps the component state of the
last ``SESSIONS`` sessions (each API call opens one) and the statistics of ``ANALYTICS_EVENTS``
events; ``launch`` also drops Gradio's records of finished sessions and removed files, and has
glibc's malloc keep fewer, tidier heaps (``_tune_malloc``).
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from html import escape
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
from threadpoolctl import threadpool_limits

from bsviz.assets import example_paths
from bsviz.fer.predict import Prediction, Predictor
from bsviz.files import write_bytes_atomic
from bsviz.rig.blend import blend, displacement
from bsviz.rig.colours import heat_colours, vertex_colours
from bsviz.rig.export import save_mesh, save_rig_glb
from bsviz.rig.render import Renderer
from bsviz.rig.rig import REGIONS, load_rig, shape_region
from bsviz.ui.plot import compare_figure, timeline_figure, weights_figure
from bsviz.vision.draw import draw_boxes, draw_mesh, fit_to
from bsviz.vision.faces import NoFaceError
from bsviz.vision.fit import Fit
from bsviz.vision.image import ImageError, read_image
from bsviz.vision.video import MAX_FRAMES, SMOOTHING, VideoFrames, smooth

MODEL_ENV = "BSVIZ_MODEL"
CACHE_ENV = "BSVIZ_APP_CACHE_MB"
CACHE_MB = 512           # MB (2**20 bytes); the default cap on the temp folder
MAX_AGE_SECONDS = 300    # files a request left in the temp folder are removed after this
KEEP_SECONDS = 60        # files younger than this stay: a page may still fetch them, a queued
                         # request read its upload, a request fill its new folder
TIDY_SECONDS = 10        # while serving, the temp folder and Gradio's records are tidied this often
SESSIONS = 64            # sessions whose component state Gradio keeps (LRU; ~0.3 MB each): a
                         # page evicted by newer ones keeps working but forgets its gr.State values
ANALYTICS_EVENTS = 1000  # events whose statistics Gradio keeps for its monitoring page
MALLOC_ARENAS = 2        # glibc malloc arenas (heaps) that the server's threads share
MMAP_THRESHOLD = 2**18   # bytes; glibc's malloc maps larger blocks, and unmaps them when freed
MAX_FILE_SIZE = "25mb"   # uploads larger than this are refused by Gradio
SHOW_SIZE = 512          # px; longer side of the image shown back with its face box
STILL_SIZE = 320         # px; the rendered still
CONCURRENCY = 2          # requests worked on at once (queued beyond); videos: one at a time
THREADS = 1              # OpenCV's and BLAS's per request: with CONCURRENCY at once, more contend
QUEUE = {"concurrency_id": "photo"}


# --------------------------------------------------------------------------- temp folder


def cache_bytes() -> int:
    """The temp folder's cap in bytes: ``$BSVIZ_APP_CACHE_MB`` MB, else ``CACHE_MB``."""
    text = os.environ.get(CACHE_ENV, str(CACHE_MB))
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = float("nan")
    if not megabytes > 0:
        raise ValueError(f"{CACHE_ENV} must be a positive number of megabytes, got '{text}'")
    return int(megabytes * 2**20)


def sweep(folder: str | Path, cap_bytes: int, keep_seconds: float, max_age_seconds: float
          ) -> list[str]:
    """Remove the files under ``folder`` older than ``max_age_seconds`` (by modification
    time), then the oldest while the files total more than ``cap_bytes``, sparing those
    younger than ``keep_seconds``; then the empty folders older than ``keep_seconds``.
    Returns the removed files' paths.

    The total passes the cap only while the files of the last ``keep_seconds`` alone do.
    Files and folders removed meanwhile by others are skipped.
    """
    now = time.time()
    files, folders = [], []
    for root, subfolders, names in os.walk(os.path.abspath(folder)):
        folders += [os.path.join(root, name) for name in subfolders]
        for name in names:
            path = os.path.join(root, name)
            with suppress(FileNotFoundError):
                stat = os.lstat(path)
                files.append((stat.st_mtime, stat.st_size, path))
    files.sort()
    total = sum(size for _, size, _ in files)
    removed = []
    for mtime, size, path in files:  # oldest first: once one stays, the newer ones do too
        age = now - mtime
        if age <= keep_seconds or (total <= cap_bytes and age <= max_age_seconds):
            break
        with suppress(FileNotFoundError):
            os.remove(path)
        removed.append(path)
        total -= size
    for path in reversed(folders):  # the deepest first
        with suppress(OSError):  # not empty, or gone
            if now - os.lstat(path).st_mtime > keep_seconds:
                os.rmdir(path)
    return removed


# --------------------------------------------------------------------------- engine


@dataclass
class Analysis:
    """One photo analysed: its pixels, a description, a prediction per face (largest first),
    notes (warnings)."""

    rgb: np.ndarray
    what: str
    predictions: list[Prediction]
    notes: list[str]


@dataclass
class VideoAnalysis:
    """A video analysed frame by frame (T frames kept).

    times : (T,) seconds; found : (T,) bool, a face in the frame
    probabilities : (T, C), weights : (T, K), smoothed over time (frames without a face hold)
    files : the animated GLB and the per-frame JSON
    """

    frames: VideoFrames
    times: np.ndarray
    found: np.ndarray
    probabilities: np.ndarray
    weights: np.ndarray
    files: list[Path]


class Engine:
    """The network, the rig and a renderer, shared by all sessions (thread-safe)."""

    def __init__(self, model_path: str | Path | None = None, out_dir: str | Path | None = None):
        """Load the network (``model_path``, default: the shipped one) and the rig; files go
        into ``out_dir`` (default: a new temp folder of the engine's own, removed on ``close``),
        which is kept under ``cache_bytes()``."""
        self.cache_bytes = cache_bytes()
        self.predictor = Predictor(model_path)
        self.rig = load_rig()
        name = model_path or "the shipped model"
        if self.predictor.kind != "two_stream":
            raise ValueError(f"the app needs a two-stream model; {name} is a "
                             f"{self.predictor.kind} model")
        if self.predictor.shape_names != self.rig.names:
            raise ValueError(f"the shape names of {name} are not the rig's")
        self.classes = self.predictor.classes
        self.triangles = self.rig.visible_triangles()
        self.colours = vertex_colours(self.rig)
        skin = [i for i, n in enumerate(self.rig.group_names) if n == "M_Face"]
        self.skin = self.rig.triangles[np.isin(self.rig.triangle_groups, skin)] if skin \
            else self.triangles  # the triangles drawn over the photo
        self.renderer = Renderer(self.rig, size=STILL_SIZE)
        self._own_dir = out_dir is None
        self.out_dir = Path(tempfile.mkdtemp(prefix="bsviz-app-") if out_dir is None else out_dir)
        if self._own_dir:
            atexit.register(shutil.rmtree, self.out_dir, ignore_errors=True)
        # MediaPipe's landmarker is not thread-safe, nor is warnings.catch_warnings (global
        # state): both are used only under this lock.
        self._predict_lock = threading.Lock()
        self._render_lock = threading.Lock()  # one GL context
        self._tidy_lock = threading.Lock()

    def close(self) -> None:
        """Close the renderer and the face finder; remove the engine's own temp folder."""
        self.renderer.close()
        self.predictor.close()
        if self._own_dir:
            shutil.rmtree(self.out_dir, ignore_errors=True)

    def tidy(self) -> list[str]:
        """``sweep`` the temp folder (one sweep at a time); returns the removed files."""
        with self._tidy_lock:
            return sweep(self.out_dir, self.cache_bytes, KEEP_SECONDS, MAX_AGE_SECONDS)

    def analyse(self, image: str | Path | np.ndarray) -> Analysis:
        """Every face in an upload (a file path) or a webcam frame (an array).

        Raises ImageError for an unusable image and NoFaceError when there is no face."""
        rgb, what = read_image(image, "the webcam frame" if isinstance(image, np.ndarray) else None)
        with self._predict_lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predictions = self.predictor.predict_all(rgb)
        if not predictions:
            raise NoFaceError(f"no face found in {what}; try a photo with a clear face of at "
                              f"least {self.predictor.finder.detector.min_face} px")
        notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        notes += [f"face {i} has no MediaPipe landmarks: it is classified from "
                  + ("the detector's box" if p.face.found_by == "detector" else
                     "the whole image, a small one taken as a face crop")
                  + ", with no MediaPipe scores to compare"
                  for i, p in enumerate(predictions, 1) if p.face.landmarks is None]
        return Analysis(rgb, what, predictions, notes)

    def mesh(self, weights: Sequence[float], heatmap: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
        """The face's vertices (V, 3) and colours (V, 3): the rig's, or |T - b0| as a heatmap."""
        vertices = blend(self.rig, np.asarray(weights, np.float32))
        colours = heat_colours(displacement(self.rig, vertices)) if heatmap else self.colours
        return vertices, colours

    def glb(self, weights: Sequence[float], heatmap: bool = False) -> Path:
        """A new GLB file of the face with these (K,) weights, for the viewer: compact (the
        drawn vertices only, quantised, triangle strips; ``save_mesh(compact=True)``), 0.50 MB
        instead of 1.57."""
        path = save_mesh(self._folder() / "face.glb", *self._mesh_args(weights, heatmap),
                         compact=True)
        self.tidy()
        return path

    def still(self, weights: Sequence[float], heatmap: bool = False) -> np.ndarray:
        """(STILL_SIZE, STILL_SIZE, 3) uint8 front view of the face with these weights."""
        vertices, colours = self.mesh(weights, heatmap)
        with self._render_lock:
            return self.renderer.render(vertices, "front", colours)

    def posed(self, fit) -> np.ndarray:
        """(V, 3) the rig fitted to a face (a ``vision.fit.Fit``, or its dict in the app's
        state), posed as in the photo: x, y in the photo's pixels, z the depth in pixels."""
        if isinstance(fit, dict):
            fit = Fit(np.array(fit["weights"], np.float32), np.array(fit["identity"], np.float32),
                      fit["scale"], np.array(fit["rotation"]), np.array(fit["translation"]),
                      fit["nme"])
        return fit.to_image(blend(self.rig, fit.weights, fit.identity))

    def export_posed(self, fit: dict) -> list[Path]:
        """The fitted face posed as in the photo (OBJ, photo pixels, y down) and its fit (JSON:
        pose in degrees, weights, identity, NME), in a new folder."""
        folder = self._folder()
        values = {"pose": fit["pose"], "nme": fit["nme"], "identity": fit["identity"],
                  "weights": dict(zip(self.rig.names, np.round(fit["weights"], 4).tolist()))}
        paths = [save_mesh(folder / "bsviz_posed_face.obj", self.posed(fit), self.triangles,
                           self.colours),
                 write_bytes_atomic(folder / "bsviz_fit.json",
                                    json.dumps(values, indent=1).encode())]
        self.tidy()
        return paths

    def export(self, weights: Sequence[float], heatmap: bool = False) -> list[Path]:
        """The face as GLB and OBJ, and the weights as JSON {name: value} (what
        ``bsviz blend --weights`` reads), in a new folder."""
        folder = self._folder()
        args = self._mesh_args(weights, heatmap)
        values = dict(zip(self.rig.names, np.round(np.asarray(weights, float), 4).tolist()))
        paths = [save_mesh(folder / "bsviz_face.glb", *args),
                 save_mesh(folder / "bsviz_face.obj", *args),
                 write_bytes_atomic(folder / "bsviz_weights.json",
                                    json.dumps(values, indent=1).encode())]
        self.tidy()
        return paths

    def analyse_video(self, path: str | Path, max_frames: int = MAX_FRAMES) -> VideoAnalysis:
        """Expression and weights per frame, smoothed; the sequence as an animated GLB."""
        frames = VideoFrames(path, max_frames)
        c = len(self.classes)
        rows = []  # per frame: C probabilities, then K weights; NaN without a face
        for rgb in frames:
            with self._predict_lock, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # several faces: the largest is fine here
                try:
                    p = self.predictor.predict(rgb, whole_crops=False)
                    rows.append(np.concatenate([p.probabilities, p.weights]))
                except NoFaceError:
                    rows.append(np.full(c + self.rig.n_shapes, np.nan))
        found = np.isfinite(rows).all(axis=1)
        if not found.any():
            raise NoFaceError(f"no face found in any of the {len(found)} frames of "
                            f"{frames.path.name}")
        times = np.arange(len(found)) / frames.fps
        smoothed = smooth(np.array(rows))
        probabilities, weights = smoothed[:, :c], smoothed[:, c:]
        folder = self._folder()
        glb = save_rig_glb(folder / "bsviz_video.glb", self.rig, weights=weights[0],
                           animation=weights, fps=frames.fps, colours=self.colours)
        per_frame = [{"time": round(float(t), 3), "face": bool(f),
                      "expression": self.classes[int(np.argmax(p))],
                      "weights": dict(zip(self.rig.names, np.round(w, 4).tolist()))}
                     for t, f, p, w in zip(times, found, probabilities, weights)]
        data = json.dumps({"fps": frames.fps, "frames": per_frame}, indent=1).encode()
        files = [glb, write_bytes_atomic(folder / "bsviz_video.json", data)]
        self.tidy()
        return VideoAnalysis(frames, times, found, probabilities, weights, files)

    def _mesh_args(self, weights, heatmap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        vertices, colours = self.mesh(weights, heatmap)
        return vertices, self.triangles, colours

    def _folder(self) -> Path:
        """A new folder under ``out_dir`` (file names stay readable for downloads)."""
        folder = self.out_dir / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True)
        return folder


_engine: Engine | None = None
_engine_lock = threading.Lock()


def load(model_path: str | Path | None = None) -> Engine:
    """Load the model the app serves: ``model_path``, else $BSVIZ_MODEL, else the shipped one.

    Raises CheckpointError naming the file when it is missing or unusable (the old model stays).
    """
    global _engine
    new = Engine(model_path or os.environ.get(MODEL_ENV) or None)
    with _engine_lock:
        old, _engine = _engine, new
    if old is not None:
        old.close()
    return new


def engine() -> Engine:
    """The loaded Engine (loaded on first use if ``launch`` did not)."""
    with _engine_lock:
        if _engine is not None:
            return _engine
    return load()


# --------------------------------------------------------------------------- callbacks


def _warn(message: str) -> None:
    gr.Warning(escape(message, quote=False))  # the toast renders HTML; names come from users


def on_photo(image: str | np.ndarray | None, heatmap: bool = False) -> tuple:
    """An upload, webcam frame or example -> status, the image with every face boxed and
    numbered, then ``on_face``'s outputs for the largest face, the face selector, and the
    faces' results (the selector's state)."""
    k = engine().rig.n_shapes
    unchanged = [gr.update()] * k  # the sliders keep their values
    if image is None:
        return ("", None, None, None, None, None, *unchanged, gr.update(choices=[], value=None),
                None)
    try:
        a = engine().analyse(image)
    except (ImageError, NoFaceError) as e:
        _warn(str(e))
        return (f"Error: {e}", None, None, None, None, None, *unchanged,
                gr.update(choices=[], value=None), None)
    for note in a.notes:
        _warn(note)
    faces = [{"box": p.face.box.tolist(), "probabilities": p.probabilities.tolist(),
              "weights": p.weights.tolist(),
              "mediapipe": None if p.mediapipe_weights is None else p.mediapipe_weights.tolist(),
              "fit": None if p.fit is None else {
                  "weights": p.fit.weights.tolist(), "identity": p.fit.identity.tolist(),
                  "scale": p.fit.scale, "rotation": p.fit.rotation.tolist(),
                  "translation": p.fit.translation.tolist(), "pose": p.fit.pose,
                  "nme": p.fit.nme}}
             for p in a.predictions]
    choices = [_face_name(i, p) for i, p in enumerate(a.predictions)]
    n = len(faces)
    status = "\n".join([f"{n} face{'s' * (n != 1)} found in {a.what}; showing face 1 (the "
                        "largest; pick another below)" if n > 1 else f"1 face found in {a.what}",
                        *(f"{name}" for name in choices), *(f"Note: {note}" for note in a.notes)])
    # the photo at SHOW_SIZE, each face's fitted rig drawn where it sits in it, then the boxes
    scale = SHOW_SIZE / max(a.rgb.shape[:2])
    shown = fit_to(a.rgb, SHOW_SIZE)
    for p in a.predictions:
        if p.fit is not None:
            shown = draw_mesh(shown, engine().posed(p.fit) * scale, engine().skin,
                              size=SHOW_SIZE)
    shown = draw_boxes(shown, [np.array(f["box"]) * scale for f in faces],
                       [c.split(" (")[0] for c in choices], SHOW_SIZE)
    return (status, shown, *on_face(choices[0], faces, heatmap),
            gr.update(choices=choices, value=choices[0]), {"faces": faces, "what": a.what})


def _face_name(i: int, p: Prediction) -> str:
    """'2 happy (0.91)': a face's number, top expression and its probability."""
    return f"{i + 1} {p.expression} ({p.probabilities.max():.2f})"


def on_face(choice: str | None, faces: list[dict] | dict | None, heatmap: bool = False) -> tuple:
    """A face picked (by its selector entry) -> probabilities, weights chart, comparison chart,
    GLB, and the K slider values, all of that face."""
    faces = faces.get("faces") if isinstance(faces, dict) else faces
    if not choice or not faces:
        return (None, None, None, None, *[gr.update()] * engine().rig.n_shapes)
    face = faces[int(choice.split()[0]) - 1]
    probabilities, weights = np.array(face["probabilities"]), np.array(face["weights"])
    mediapipe = None if face["mediapipe"] is None else np.array(face["mediapipe"])
    fitted = None if face.get("fit") is None else np.array(face["fit"]["weights"])
    names = engine().rig.names
    return (dict(zip(engine().classes, probabilities.tolist())), weights_figure(weights, names),
            compare_figure(weights, mediapipe, names, fitted), engine().glb(weights, heatmap),
            *weights.tolist())


def on_posed(choice: str | None, state: dict | None) -> list[str] | None:
    """The picked face's rig, fitted to its landmarks and posed as in the photo (x, y in the
    photo's pixels, z the depth), as an OBJ, with its pose and fit as JSON."""
    faces = (state or {}).get("faces")
    if not choice or not faces:
        return None
    face = faces[int(choice.split()[0]) - 1]
    if face.get("fit") is None:
        _warn("this face has no landmarks, so no fitted rig to export")
        return None
    return [str(p) for p in engine().export_posed(face["fit"])]


def on_example(heatmap: bool, selected: gr.SelectData) -> tuple:
    """A gallery example clicked: ``on_photo`` on its file."""
    return on_photo(str(example_paths()[selected.index]), heatmap)


def on_edit(heatmap: bool, *weights: float) -> str:
    """Sliders or the heatmap toggle changed: a new GLB of the face."""
    return str(engine().glb(weights, heatmap))


def on_still(glb: str | None, heatmap: bool, *weights: float) -> np.ndarray | None:
    """A rendered still of the 3D face, when asked (none when the face was cleared)."""
    return None if glb is None else engine().still(weights, heatmap)


def on_export(heatmap: bool, *weights: float) -> list[str]:
    """Download files: the face (GLB, OBJ) and its weights (JSON)."""
    return [str(p) for p in engine().export(weights, heatmap)]


def on_video(path: str | None) -> tuple:
    """A video -> status, mean expression, timeline chart, animated GLB, download files."""
    if path is None:
        return ("", None, None, None, None)
    try:
        v = engine().analyse_video(path)
    except (ImageError, NoFaceError) as e:
        _warn(str(e))
        return (f"Error: {e}", None, None, None, None)
    f = v.frames
    kept = f"{len(v.times)} frames at {f.fps:.1f} fps"
    if f.stride > 1:
        kept += f" (1 in {f.stride} of {f.total})"
    lines = [f"{kept} from {f.path.name}, following the largest face of each frame; smoothed "
             f"(moving average, {SMOOTHING} on the newest)"]
    missing = v.times[~v.found]
    if len(missing):
        shown = ", ".join(f"{t:.2f}" for t in missing[:10]) + (" ..." if len(missing) > 10 else "")
        lines.append(f"No face in {len(missing)} of {len(v.times)} frames (at {shown} s): "
                     "they hold the previous frame's values")
        _warn(lines[-1])
    mean = v.probabilities[v.found].mean(axis=0)
    classes, names = engine().classes, engine().rig.names
    return ("\n".join(lines), dict(zip(classes, mean.tolist())),
            timeline_figure(v.times, v.probabilities, classes, v.weights, names, v.found),
            str(v.files[0]), [str(p) for p in v.files])


# --------------------------------------------------------------------------- layout


def build_demo() -> gr.Blocks:
    """The app's Blocks: a Photo tab (input, prediction, 3D face, editing) and a Video tab.
    Its handlers serve the engine ``load`` made (loaded on first use otherwise)."""
    names = load_rig().names
    examples = example_paths()
    # No delete_cache: Gradio's sweeper removes files only after an hour at the least, misses
    # the engine's own folders and iterates its file sets while requests add to them
    # (RuntimeError: Set changed size during iteration). ``launch`` tidies instead.
    with gr.Blocks(title="bsviz: expression and 3D blendshapes") as demo:
        gr.Markdown("## bsviz: facial expression and 3D blendshapes\nA two-stream CNN "
                    "(BlendshapeFERNet) classifies the expression of the face and regresses "
                    "the 53 ICT FaceKit blendshape weights, shown as a 3D face.")
        with gr.Tab("Photo"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=1):
                    with gr.Tab("Upload"):
                        upload = gr.File(label="Photo with a face (PNG, JPEG, WebP)",
                                         elem_id="upload", height=120)
                    with gr.Tab("Webcam"):
                        webcam = gr.Image(label="Webcam", sources=["webcam"], type="numpy")
                    with gr.Tab("Examples"):
                        gallery = gr.Gallery([(str(p), p.stem) for p in examples],
                                             label="Renders of the rig (click one)", columns=3,
                                             allow_preview=False, height=260)
                    shown = gr.Image(label="Face found", interactive=False, height=300,
                                     format="jpeg")
                    face_pick = gr.Dropdown(label="Face shown (numbered as in the image, "
                                            "largest first)", choices=[], interactive=True,
                                            elem_id="face")
                    faces_state = gr.State()
                    status = gr.Textbox(label="Status", interactive=False, lines=2,
                                        elem_id="status")
                with gr.Column(scale=1):
                    label = gr.Label(label="Expression", num_top_classes=7, elem_id="expression")
                    weights_plot = gr.Plot(label="Regressed weights")
                    compare_plot = gr.Plot(label="Ours vs MediaPipe")
                with gr.Column(scale=1):
                    with gr.Row():
                        model = gr.Model3D(label="3D face (drag to turn)", height=360,
                                           elem_id="model3d", interactive=False, scale=3)
                        still = gr.Image(label="Rendered", interactive=False, height=360,
                                         format="jpeg", scale=2, elem_id="still")
                    render = gr.Button("Render a still (offscreen, the rig's own renderer)",
                                       size="sm", elem_id="render-still")
                    heatmap = gr.Checkbox(label="Colour by displacement |T - b0| (heatmap)")
                    export = gr.Button("Export face (GLB, OBJ) and weights (JSON)")
                    export_posed = gr.Button("Export the fitted face posed as in the photo "
                                             "(OBJ) and its pose (JSON)")
                    files = gr.File(label="Downloads", file_count="multiple",
                                    interactive=False)
            gr.Markdown("### Edit the weights (the 3D face updates when a slider is released)")
            sliders: dict[str, gr.Slider] = {}
            with gr.Row():
                for region in REGIONS:
                    members = [n for n in names if shape_region(n) == region]
                    if members:
                        with gr.Column(min_width=200), gr.Accordion(
                                f"{region} ({len(members)})", open=False):
                            for n in members:
                                sliders[n] = gr.Slider(0, 1, 0, step=0.01, precision=2, label=n,
                                                       elem_id=f"w-{n}")
            weight_sliders = [sliders[n] for n in names]  # the rig's order

        with gr.Tab("Video"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=1):
                    video = gr.Video(label=f"Short video (at most {MAX_FRAMES} frames are used)",
                                     sources=["upload", "webcam"])
                    video_status = gr.Textbox(label="Status", interactive=False, lines=3)
                with gr.Column(scale=1):
                    video_label = gr.Label(label="Mean expression", num_top_classes=7)
                    timeline = gr.Plot(label="Over time")
                with gr.Column(scale=1):
                    video_model = gr.Model3D(label="Animated face (glTF morph targets)",
                                             height=360, interactive=False)
                    video_files = gr.File(label="Downloads", file_count="multiple",
                                          interactive=False)

        face_out = [label, weights_plot, compare_plot, model, *weight_sliders]
        photo_out = [status, shown, *face_out, face_pick, faces_state]
        face_pick.input(on_face, [face_pick, faces_state, heatmap], face_out, api_name="face",
                        **QUEUE)
        upload.upload(on_photo, [upload, heatmap], photo_out, api_name="analyse", **QUEUE)
        webcam.input(on_photo, [webcam, heatmap], photo_out, api_visibility="undocumented",
                     **QUEUE)
        gallery.select(on_example, [heatmap], photo_out, api_visibility="undocumented", **QUEUE)
        gr.on([s.release for s in weight_sliders] + [heatmap.input], on_edit,
              [heatmap, *weight_sliders], model, api_name="edit", trigger_mode="always_last",
              **QUEUE)
        # the still only when asked (a render costs about as much as the analysis); a new 3D
        # face clears the old one in the browser
        render.click(on_still, [model, heatmap, *weight_sliders], still, api_name="still",
                     trigger_mode="always_last", **QUEUE)
        model.change(None, None, still, js="() => null")
        export.click(on_export, [heatmap, *weight_sliders], files, api_name="export", **QUEUE)
        export_posed.click(on_posed, [face_pick, faces_state], files, api_name="posed", **QUEUE)
        video.change(on_video, video, [video_status, video_label, timeline, video_model,
                                       video_files],
                     api_name="video", concurrency_id="video", concurrency_limit=1)
    return demo


def _tidy(blocks: gr.Blocks) -> None:
    """``Engine.tidy``, then drop the files gone from disk from Gradio's sets of its files
    (which only its own sweeper would empty)."""
    engine().tidy()
    for paths in blocks.temp_file_sets:
        paths.difference_update([p for p in list(paths) if not os.path.exists(p)])


@asynccontextmanager
async def _housekeeping(server) -> AsyncIterator[None]:
    """While Gradio serves (``server``: its FastAPI app), every ``TIDY_SECONDS``: ``_tidy``,
    and drop the queue's records of sessions with no event left to deliver (each API call
    leaves an event id set and a message queue)."""
    async def tidy_forever() -> None:
        blocks = server.get_blocks()
        while True:
            await asyncio.sleep(TIDY_SECONDS)
            await asyncio.to_thread(_tidy, blocks)
            # On the event loop, where Gradio's queue reads and writes these, with no await
            # between: no request sees a half-dropped session.
            queue = blocks._queue
            pending = queue.pending_event_ids_session
            for session in [s for s, events in pending.items() if not events]:
                del pending[session]
                queue.pending_messages_per_session.pop(session, None)

    task = asyncio.create_task(tidy_forever())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def _tune_malloc() -> None:
    """Have glibc's malloc share ``MALLOC_ARENAS`` arenas among all threads, and map each block
    over ``MMAP_THRESHOLD`` bytes (unmapped when freed).

    By default each thread that allocates gets an arena of its own (up to 8 per core) and the
    threshold rises to the largest block freed (up to 32 MB), so Gradio's short-lived worker
    threads cut each request's GLBs and buffers from ever more heaps, which keep the fragments:
    the server's RSS grew ~60 MB per 1000 requests of the soak test. Call it before threads
    start (a limit set later keeps the arenas there are). Nothing happens where the C library
    has no ``mallopt`` (not glibc).
    """
    libc = ctypes.CDLL(None)
    if hasattr(libc, "mallopt"):
        libc.mallopt(-8, MALLOC_ARENAS)   # M_ARENA_MAX in glibc's malloc.h
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD


def launch(host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           model: str | Path | None = None, **kwargs) -> gr.Blocks:
    """Load the model (a missing or damaged file fails here, named), then serve the app.

    ``share`` asks Gradio for a public link, which needs internet access; without it
    Gradio says it could not create one and the app serves locally. ``kwargs`` go to
    ``Blocks.launch`` (e.g. ``prevent_thread_lock=True``, ``auth=[(user, password)]``).
    Returns the running Blocks.
    """
    _tune_malloc()
    cv2.setNumThreads(THREADS)
    threadpool_limits(THREADS, user_api="blas")
    served = load(model)
    os.environ["GRADIO_TEMP_DIR"] = str(served.out_dir)  # uploads too; read when serving starts
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    # Gradio summarises its run statistics with pandas after every event by default: costly.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "100")
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", str(ANALYTICS_EVENTS))
    examples = example_paths()
    if examples:
        gr.set_static_paths([examples[0].parent])  # served in place, not copied to the temp folder
        served.analyse(examples[0])  # warm up MediaPipe and the network before serving
    blocking = not kwargs.get("prevent_thread_lock")
    if blocking and threading.current_thread() is threading.main_thread():
        # `kill` then stops the server as Ctrl-C does, and the temp folder is removed at exit.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    with warnings.catch_warnings():
        # Noise from Gradio's internals: it replaces its own asyncio loops while building and
        # launching (utils.safe_get_lock), and its run statistics use deprecated pandas calls.
        warnings.filterwarnings("ignore", "unclosed event loop", ResourceWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="gradio")
        demo = build_demo()
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64).launch(
        server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
        allowed_paths=[str(examples[0].parent)] if examples else None, ssr_mode=False,
        state_session_capacity=SESSIONS, app_kwargs={"lifespan": _housekeeping}, **kwargs)
    return demo


if __name__ == "__main__":
    try:
        launch()
    except (ValueError, OSError) as e:
        sys.exit(f"bsviz app: error: {e}")

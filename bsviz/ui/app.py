"""The bsviz web app (Gradio): a face photo or video in; the expression, the 53 blendshape
weights and the 3D face out, editable with sliders and exportable.

``bsviz app`` (or ``python -m bsviz.ui.app``) calls ``launch``, which loads the model
(``--model``, else ``$BSVIZ_MODEL``, else the shipped one) into an ``Engine`` and serves
``build_demo()`` on 127.0.0.1. Importing this module does nothing else: the engine makes its own
temp folder, and ``launch`` points Gradio's uploads there and turns Gradio's analytics off, so
nothing is looked up outside; the folder is removed when the engine closes or the process exits.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from bsviz.assets import example_paths
from bsviz.fer.predict import Prediction, Predictor
from bsviz.files import write_bytes_atomic
from bsviz.rig.blend import blend, displacement
from bsviz.rig.colours import heat_colours, vertex_colours
from bsviz.rig.export import save_mesh, save_rig_glb
from bsviz.rig.render import Renderer
from bsviz.rig.rig import REGIONS, load_rig, shape_region
from bsviz.ui.plot import compare_figure, timeline_figure, weights_figure
from bsviz.vision.faces import NoFaceError, draw_box
from bsviz.vision.image import ImageError, read_image
from bsviz.vision.video import MAX_FRAMES, SMOOTHING, VideoFrames, smooth

MODEL_ENV = "BSVIZ_MODEL"
MAX_FILE_SIZE = "25mb"   # uploads larger than this are refused by Gradio
SHOW_SIZE = 512          # px; longer side of the image shown back with its face box
STILL_SIZE = 320         # px; the rendered still
CONCURRENCY = 2          # requests worked on at once (queued beyond); videos: one at a time
TORCH_THREADS = 1        # per request: with CONCURRENCY requests at once, more threads contend
QUEUE = {"concurrency_id": "photo"}


# --------------------------------------------------------------------------- engine


@dataclass
class Analysis:
    """One photo analysed: its pixels, a description, the prediction, notes (warnings)."""

    rgb: np.ndarray
    what: str
    prediction: Prediction
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
        into ``out_dir`` (default: a new temp folder of the engine's own, removed on ``close``)."""
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
        self.renderer = Renderer(self.rig, size=STILL_SIZE)
        self._own_dir = out_dir is None
        self.out_dir = Path(tempfile.mkdtemp(prefix="bsviz-app-") if out_dir is None else out_dir)
        if self._own_dir:
            atexit.register(shutil.rmtree, self.out_dir, ignore_errors=True)
        # MediaPipe's landmarker is not thread-safe, nor is warnings.catch_warnings (global
        # state): both are used only under this lock.
        self._predict_lock = threading.Lock()
        self._render_lock = threading.Lock()  # one GL context

    def close(self) -> None:
        """Close the renderer and the face finder; remove the engine's own temp folder."""
        self.renderer.close()
        self.predictor.close()
        if self._own_dir:
            shutil.rmtree(self.out_dir, ignore_errors=True)

    def analyse(self, image: str | Path | np.ndarray) -> Analysis:
        """The face in an upload (a file path) or a webcam frame (an array).

        Raises ImageError for an unusable image and NoFaceError when there is no face."""
        rgb, what = read_image(image, "the webcam frame" if isinstance(image, np.ndarray) else None)
        with self._predict_lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                prediction = self.predictor.predict(rgb)
            except NoFaceError:
                raise NoFaceError(f"no face found in {what}; try a photo with a clear, "
                                "frontal face") from None
        notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        return Analysis(rgb, what, prediction, notes)

    def mesh(self, weights: Sequence[float], heatmap: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
        """The face's vertices (V, 3) and colours (V, 3): the rig's, or |T - b0| as a heatmap."""
        vertices = blend(self.rig, np.asarray(weights, np.float32))
        colours = heat_colours(displacement(self.rig, vertices)) if heatmap else self.colours
        return vertices, colours

    def glb(self, weights: Sequence[float], heatmap: bool = False) -> Path:
        """A new GLB file of the face with these (K,) weights."""
        return save_mesh(self._folder() / "face.glb", *self._mesh_args(weights, heatmap))

    def still(self, weights: Sequence[float], heatmap: bool = False) -> np.ndarray:
        """(STILL_SIZE, STILL_SIZE, 3) uint8 front view of the face with these weights."""
        vertices, colours = self.mesh(weights, heatmap)
        with self._render_lock:
            return self.renderer.render(vertices, "front", colours)

    def export(self, weights: Sequence[float], heatmap: bool = False) -> list[Path]:
        """The face as GLB and OBJ, and the weights as JSON {name: value} (what
        ``bsviz blend --weights`` reads), in a new folder."""
        folder = self._folder()
        args = self._mesh_args(weights, heatmap)
        values = dict(zip(self.rig.names, np.round(np.asarray(weights, float), 4).tolist()))
        return [save_mesh(folder / "bsviz_face.glb", *args),
                save_mesh(folder / "bsviz_face.obj", *args),
                write_bytes_atomic(folder / "bsviz_weights.json",
                                   json.dumps(values, indent=1).encode())]

    def analyse_video(self, path: str | Path, max_frames: int = MAX_FRAMES) -> VideoAnalysis:
        """Expression and weights per frame, smoothed; the sequence as an animated GLB."""
        frames = VideoFrames(path, max_frames)
        c = len(self.classes)
        rows = []  # per frame: C probabilities, then K weights; NaN without a face
        for rgb in frames:
            with self._predict_lock, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # several faces: the largest is fine here
                try:
                    p = self.predictor.predict(rgb)
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
    """An upload, webcam frame or example -> status, image with the face box, probabilities,
    weights chart, comparison chart, GLB, and the K slider values."""
    unchanged = [gr.update()] * engine().rig.n_shapes  # the sliders keep their values
    if image is None:
        return ("", None, None, None, None, None, *unchanged)
    try:
        a = engine().analyse(image)
    except (ImageError, NoFaceError) as e:
        _warn(str(e))
        return (f"Error: {e}", None, None, None, None, None, *unchanged)
    for note in a.notes:
        _warn(note)
    p = a.prediction
    x0, y0, x1, y1 = np.round(p.face.box).astype(int).tolist()
    status = "\n".join([f"{p.expression} ({p.probabilities.max():.2f}): face at ({x0}, {y0})-"
                        f"({x1}, {y1}) in {a.what}", *(f"Note: {note}" for note in a.notes)])
    return (status, draw_box(a.rgb, p.face.box, SHOW_SIZE),
            dict(zip(p.classes, p.probabilities.tolist())),
            weights_figure(p.weights, p.shape_names),
            compare_figure(p.weights, p.mediapipe_weights, p.shape_names),
            engine().glb(p.weights, heatmap), *p.weights.tolist())


def on_example(heatmap: bool, selected: gr.SelectData) -> tuple:
    """A gallery example clicked: ``on_photo`` on its file."""
    return on_photo(str(example_paths()[selected.index]), heatmap)


def on_edit(heatmap: bool, *weights: float) -> str:
    """Sliders or the heatmap toggle changed: a new GLB of the face."""
    return str(engine().glb(weights, heatmap))


def on_still(glb: str | None, heatmap: bool, *weights: float) -> np.ndarray | None:
    """The 3D face changed: a rendered still of it (none when the face was cleared)."""
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
    lines = [f"{kept} from {f.path.name}; smoothed (moving average, {SMOOTHING} on the newest)"]
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
    with gr.Blocks(title="bsviz: expression and 3D blendshapes",
                   delete_cache=(600, 3600)) as demo:
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
                    heatmap = gr.Checkbox(label="Colour by displacement |T - b0| (heatmap)")
                    export = gr.Button("Export face (GLB, OBJ) and weights (JSON)")
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

        photo_out = [status, shown, label, weights_plot, compare_plot, model, *weight_sliders]
        upload.upload(on_photo, [upload, heatmap], photo_out, api_name="analyse", **QUEUE)
        webcam.input(on_photo, [webcam, heatmap], photo_out, api_visibility="undocumented",
                     **QUEUE)
        gallery.select(on_example, [heatmap], photo_out, api_visibility="undocumented", **QUEUE)
        gr.on([s.release for s in weight_sliders] + [heatmap.input], on_edit,
              [heatmap, *weight_sliders], model, api_name="edit", trigger_mode="always_last",
              **QUEUE)
        model.change(on_still, [model, heatmap, *weight_sliders], still, api_name="still",
                     trigger_mode="always_last", **QUEUE)
        export.click(on_export, [heatmap, *weight_sliders], files, api_name="export", **QUEUE)
        video.change(on_video, video, [video_status, video_label, timeline, video_model,
                                       video_files],
                     api_name="video", concurrency_id="video", concurrency_limit=1)
    return demo


def launch(host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           model: str | Path | None = None, **kwargs) -> gr.Blocks:
    """Load the model (a missing or damaged file fails here, named), then serve the app.

    ``share`` asks Gradio for a public link, which needs internet access; without it
    Gradio says it could not create one and the app serves locally. ``kwargs`` go to
    ``Blocks.launch`` (e.g. ``prevent_thread_lock=True``). Returns the running Blocks.
    """
    torch.set_num_threads(TORCH_THREADS)
    served = load(model)
    os.environ["GRADIO_TEMP_DIR"] = str(served.out_dir)  # uploads too; read when serving starts
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    # Gradio summarises its run statistics with pandas after every event by default: costly.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "100")
    examples = example_paths()
    if examples:
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
        **kwargs)
    return demo


if __name__ == "__main__":
    try:
        launch()
    except (ValueError, OSError) as e:
        sys.exit(f"bsviz app: error: {e}")

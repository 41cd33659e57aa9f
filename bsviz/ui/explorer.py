"""An ipywidgets explorer of a blendshape rig: a slider per shape, presets, a live 3D view, exports.

The face T = b0 + sum_i w_i d_i (+ identity) is re-blended on every slider change and
moved in place in a plotly ``FigureWidget`` (one update per change, however many sliders
it moves). Everything the buttons do is a plain method (``set_weights``, ``weights``,
``reset``, ``apply_preset``, ``current_vertices``, ``export_mesh``, ``export_weights``),
so code and tests drive the explorer without a browser.

The kernel holds exactly what the browser shows: values set from code are first moved onto the
sliders' steps as the browser would move them (``snap``). A value the browser has to move is
sent back to the kernel as if the user had moved the slider, after the code that set it has
finished: it would redraw the face again, and move the other side through the L/R link.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go

from bsviz.assets import presets_path
from bsviz.files import write_bytes_atomic
from bsviz.rig.blend import WeightError, blend, displacement, weight_vector
from bsviz.rig.colours import face_colours, vertex_colours
from bsviz.rig.export import save_mesh
from bsviz.rig.rig import REGIONS, Rig, load_rig, shape_region
from bsviz.ui.plot import mesh_figure, set_vertices

IDENTITY_RANGE = (-2.0, 2.0)
# px. The face keeps this size: plotly sizes a widget's figure once, before the page lays it out.
# Controls (at least 330 px) and face side by side need 800 px: a notebook at 1280x800 with
# JupyterLab's file browser open has about 840.
FACE_SIZE = (460, 560)


def load_presets(path: str | Path | None = None) -> dict[str, dict[str, float]]:
    """Expression presets ``{class_name: {shape_name: weight}}`` from JSON (default: the shipped
    ones); {} if no file."""
    path = presets_path() if path is None else Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def lr_pairs(names: tuple[str, ...]) -> dict[str, str]:
    """``{X_L: X_R, X_R: X_L}`` for every shape whose other side is in ``names``.

    Only the ``_L``/``_R`` suffixes: ``jawLeft``/``jawRight`` are opposite motions, not sides.
    """
    other = {"_L": "_R", "_R": "_L"}
    pairs = {n: n[:-2] + other[n[-2:]] for n in names if n[-2:] in other}
    return {a: b for a, b in pairs.items() if b in names}


def snap(value: float, slider: w.FloatSlider) -> float:
    """``value`` clipped to the slider's range and moved to its nearest step, as the browser's
    slider (noUiSlider) does it: in percent of the range, with the same floating-point steps.

    The browser leaves a snapped value as it is; any other value it moves and sends back.
    """
    low, high = slider.min, slider.max
    if value >= high:
        return high
    span = high - low
    percent = 100 * (value - low) / span
    step = 100 * slider.step / span
    steps = math.floor(percent / step)
    steps += percent / step - steps >= 0.5  # JavaScript's Math.round: halves go up
    at = min(max(steps * step, 0.0), 100.0)
    return high if at >= 100 else at * span / 100 + low


def _slider(name: str, low: float, high: float, step: float) -> w.FloatSlider:
    return w.FloatSlider(0.0, min=low, max=high, step=step, description=name,
                         readout_format=".2f", style={"description_width": "118px"},
                         layout=w.Layout(width="100%", min_width="320px"))


def _fixed(width: str = "auto") -> w.Layout:
    """The layout of a control that keeps its width (its whole label) in a wrapping row."""
    return w.Layout(width=width, flex="0 0 auto")


def _row(children: list[w.Widget]) -> w.Box:
    """Controls side by side, wrapping onto more lines when the row is too narrow for them."""
    return w.Box(children, layout=w.Layout(flex_flow="row wrap", align_items="center",
                                           grid_gap="2px 10px"))


class BlendshapeExplorer:
    """Sliders, presets and exports around a live 3D view of one rig; show ``.widget``.

    The face is drawn in the rig's colours (``vertex_colours``: skin, eyes, teeth and gums),
    every visible part moved by the blend: ICT's jawOpen moves the lower teeth, its eyeLook
    shapes the lids (its eyeballs have no shapes: they turn by rotation in the original asset).

    Parameters
    ----------
    rig : the rig to explore (default: the shipped ICT FaceKit rig)
    presets : {name: {shape: weight}} expression presets (default: ``load_presets()``);
        "neutral" (all zeros) is offered first unless the presets define their own
    out_dir : where the export buttons write (default: the current folder)
    """

    def __init__(self, rig: Rig | None = None,
                 presets: Mapping[str, Mapping[str, float]] | None = None,
                 out_dir: str | Path = ".") -> None:
        self.rig = load_rig() if rig is None else rig
        self.triangles = self.rig.visible_triangles()
        self.out_dir = Path(out_dir)
        presets = load_presets() if presets is None else presets
        self.presets = {"neutral": {}, **{name: dict(p) for name, p in presets.items()}}
        for preset in self.presets.values():
            weight_vector(preset, self.rig.names)  # unknown names, NaN: fail now, not when chosen
        self._pairs = lr_pairs(self.rig.names)
        self._held = False

        self.sliders = {n: _slider(n, 0.0, 1.0, 0.01) for n in self.rig.names}
        self.identity_sliders = {n: _slider(n, *IDENTITY_RANGE, 0.05)
                                 for n in self.rig.identity_names}
        self._all = {**self.sliders, **self.identity_sliders}
        for slider in self._all.values():
            slider.observe(self._on_slider, "value")

        self.search = w.Text(placeholder="search shapes, e.g. smile", layout=_fixed("220px"))
        self.link = w.Checkbox(True, description="link L/R", indent=False, layout=_fixed())
        self.heatmap = w.Checkbox(False, description="heatmap |T-b0|", indent=False,
                                  layout=_fixed())
        self.reset_button = w.Button(description="reset", layout=_fixed())
        self.preset = w.Dropdown(options=list(self.presets), description="preset",
                                 style={"description_width": "auto"}, layout=_fixed("190px"))
        self.file_name = w.Text("face", description="file", layout=_fixed("150px"),
                                style={"description_width": "auto"})
        exports = {"OBJ": lambda: self.export_mesh(".obj"), "GLB": lambda: self.export_mesh(".glb"),
                   "weights": self.export_weights}
        self.export_buttons = {label: w.Button(description=label, layout=_fixed())
                               for label in exports}
        self.status = w.Label(layout=w.Layout(width="100%"))
        groups = {r: [s for n, s in self.sliders.items() if shape_region(n) == r] for r in REGIONS}
        groups["identity"] = list(self.identity_sliders.values())
        groups = {r: s for r, s in groups.items() if s}
        self._titles = tuple(groups)
        self.regions = w.Accordion([w.VBox(s) for s in groups.values()], titles=self._titles,
                                   selected_index=0)

        self.search.observe(self._on_search, "value")
        self.heatmap.observe(lambda _: self._draw(restyle=True), "value")
        self.preset.observe(lambda change: self.apply_preset(change.new), "value")
        self.reset_button.on_click(lambda _: self.reset())
        for label, export in exports.items():
            self.export_buttons[label].on_click(lambda _, export=export: self._report(export))

        self.colours = vertex_colours(self.rig)
        width, height = FACE_SIZE
        self.figure = go.FigureWidget(mesh_figure(self.current_vertices(), self.triangles,
                                                  height=height, colours=self.colours))
        self.figure.layout.width = width
        # Controls beside the face where the notebook is wide enough, else above it; rows of
        # buttons wrap rather than squeeze their labels.
        controls = w.VBox([_row([self.search, self.preset]),
                           _row([self.link, self.heatmap, self.reset_button]), self.regions,
                           _row([self.file_name, *self.export_buttons.values()]), self.status],
                          layout=w.Layout(flex="1 1 330px", min_width="330px", max_width="470px"))
        face = w.Box([self.figure], layout=_fixed(f"{width}px"))
        self.widget = w.Box([controls, face], layout=w.Layout(
            flex_flow="row wrap", align_items="flex-start", width="100%"))
        self.widget.add_class("bsviz-explorer")

    # ---------------------------------------------------------------- state

    def weights(self) -> dict[str, float]:
        """The expression weights ``{name: value}``, in the rig's order."""
        return {n: s.value for n, s in self.sliders.items()}

    def identity(self) -> dict[str, float]:
        """The identity weights ``{name: value}``."""
        return {n: s.value for n, s in self.identity_sliders.items()}

    def current_vertices(self) -> np.ndarray:
        """(V, 3) float32 vertices of the face the sliders describe, centimetres."""
        return blend(self.rig, list(self.weights().values()), list(self.identity().values()))

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Set the named sliders (expression or identity names), redrawing once.

        Each value is clipped to its slider's range and snapped to its step (0.01 for
        expressions, 0.05 for identities), as the browser shows it. The L/R link is not
        applied: the dict says exactly what to set.
        """
        unknown = [n for n in weights if n not in self._all]
        if unknown:
            raise WeightError(f"unknown shape name(s): {', '.join(unknown[:5])}")
        if not np.isfinite(list(weights.values())).all():
            raise WeightError("weights contain NaN or inf")
        with self._batch():
            for name, value in weights.items():
                slider = self._all[name]
                slider.value = snap(float(value), slider)

    def reset(self) -> None:
        """Every slider, expression and identity, back to 0: the neutral face b0."""
        with self._batch():
            self.preset.value = "neutral"
            self.set_weights(dict.fromkeys(self._all, 0.0))

    def apply_preset(self, name: str) -> None:
        """Set all expression sliders to a preset's weights, snapped to the sliders' step
        (identity sliders keep theirs)."""
        self.set_weights({**dict.fromkeys(self.rig.names, 0.0), **self.presets[name]})

    # ---------------------------------------------------------------- exports

    def export_mesh(self, suffix: str) -> Path:
        """Write the face as ``out_dir/<file>.obj`` (cm) or ``.glb`` (m), coloured as shown."""
        v = self.current_vertices()
        colours = face_colours(self.rig, v, self.heatmap.value)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{self.file_name.value}{suffix}"
        return save_mesh(path, v, self.triangles, colours)

    def export_weights(self) -> Path:
        """Write ``out_dir/<file>.json``: ``{name: value}`` for every slider, to 6 decimals
        (the browser's arithmetic puts an identity slider at 0.04999999999999982 for 0.05).

        The format ``bsviz blend --weights`` reads, and ``set_weights`` takes back.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        values = {n: round(v, 6) for n, v in {**self.weights(), **self.identity()}.items()}
        text = json.dumps(values, indent=1)
        return write_bytes_atomic(self.out_dir / f"{self.file_name.value}.json", text.encode())

    def _report(self, export: Callable[[], Path]) -> None:
        """Run an export from a button and say on the status line what it wrote, or why not."""
        try:
            self.status.value = f"wrote {export()}"
        except (OSError, ValueError) as e:
            self.status.value = f"export failed: {e}"

    # ---------------------------------------------------------------- drawing

    @contextmanager
    def _batch(self) -> Iterator[None]:
        """Slider changes inside the block redraw once, when the outermost block ends; the
        L/R link ignores them (it follows the user's moves only)."""
        held, self._held = self._held, True
        try:
            yield
        finally:
            self._held = held
        if not held:
            self._draw()

    def _on_slider(self, change) -> None:
        """A slider moved outside a batch (by the user): move its partner if linked, redraw."""
        if self._held:  # moved by code inside a batch: that batch redraws
            return
        with self._batch():
            other = self._pairs.get(change.owner.description)
            if other and self.link.value:
                self.sliders[other].value = change.new

    def _on_search(self, change) -> None:
        """Hide the sliders whose name lacks the query; region titles count the matches."""
        query = change.new.strip().lower()
        for i, (box, title) in enumerate(zip(self.regions.children, self._titles)):
            shown = 0
            for slider in box.children:
                match = query in slider.description.lower()
                slider.layout.display = None if match else "none"
                shown += match
            self.regions.set_title(i, f"{title} ({shown})" if query else title)

    def _draw(self, restyle: bool = False) -> None:
        """Show the current face: move the mesh in place, or swap the trace for a new colouring."""
        v = self.current_vertices()
        heat = displacement(self.rig, v) if self.heatmap.value else None
        if restyle:
            self.figure.data = []
            self.figure.add_trace(mesh_figure(v, self.triangles, heat, colours=self.colours).data[0])
        else:
            set_vertices(self.figure, v, heat)

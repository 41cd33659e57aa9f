"""Interactive plotly views: a face as a Mesh3d figure updated in place, displacement heatmaps,
and charts of blendshape weights (by region, against MediaPipe, over a video's frames)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bsviz.rig.blend import displacement
from bsviz.rig.rig import REGIONS, Rig, shape_region


def _colour_range(distance: np.ndarray) -> dict[str, float]:
    """Colour-bar bounds for (V,) distances in cm: 0 to the largest, at least 0.1 (plotly's own
    range would centre a neutral face's zeros on -0.5..0.5)."""
    return {"cmin": 0.0, "cmax": max(float(np.max(distance)), 0.1)}


def mesh_figure(vertices: np.ndarray, triangles: np.ndarray, intensity: np.ndarray | None = None,
                title: str = "", height: int = 600, colours: np.ndarray | None = None
                ) -> go.Figure:
    """A plotly figure of one mesh (V, 3) with triangles (F, 3), seen from the front.

    ``intensity`` (V,) colours the vertices by a distance (e.g. ``displacement``, cm) with a
    colour bar from 0; else ``colours`` (V, 3) float RGB in [0, 1] (e.g. ``vertex_colours``:
    skin, eyes, teeth) paints each vertex; without either the mesh is a flat skin tone.
    """
    v = np.asarray(vertices, np.float32)
    if intensity is not None:
        colour = {"intensity": intensity, "colorscale": "Viridis", **_colour_range(intensity),
                  "colorbar": {"title": {"text": "|T-b0| cm"}}}
    elif colours is not None:  # a few distinct colours: name each once, then index them
        palette, index = np.unique(np.round(255 * np.asarray(colours)).astype(np.uint8), axis=0,
                                   return_inverse=True)
        names = np.array([f"rgb({r},{g},{b})" for r, g, b in palette.tolist()])
        colour = {"vertexcolor": names[index.ravel()]}
    else:
        colour = {"color": "rgb(222,176,150)"}
    mesh = go.Mesh3d(x=v[:, 0], y=v[:, 1], z=v[:, 2], i=triangles[:, 0], j=triangles[:, 1],
                     k=triangles[:, 2], flatshading=False, hoverinfo="skip",
                     lighting={"ambient": 0.45, "diffuse": 0.8, "specular": 0.1,
                               "roughness": 0.7},
                     lightposition={"x": 0, "y": 200, "z": 1000}, **colour)
    fig = go.Figure(mesh)
    fig.update_layout(
        title=title, height=height, margin={"l": 0, "r": 0, "t": 30 if title else 0, "b": 0},
        scene={"aspectmode": "data", "xaxis_visible": False, "yaxis_visible": False,
               "zaxis_visible": False,
               # +y up, looking down -z at the face (ICT convention)
               "camera": {"up": {"x": 0, "y": 1, "z": 0}, "eye": {"x": 0, "y": 0, "z": 1.6}}})
    return fig


def set_vertices(fig: go.Figure, vertices: np.ndarray, intensity: np.ndarray | None = None) -> None:
    """Move the first mesh of ``fig`` (a Figure or FigureWidget) to ``vertices`` in place."""
    v = np.asarray(vertices, np.float32)
    update = {"x": v[:, 0], "y": v[:, 1], "z": v[:, 2]}
    if intensity is not None:
        update.update(intensity=intensity, **_colour_range(intensity))
    with fig.batch_update():  # one message to the front end for a FigureWidget
        fig.data[0].update(update)


def heatmap_figure(rig: Rig, vertices: np.ndarray, triangles: np.ndarray | None = None,
                   title: str = "displacement |T - b0|") -> go.Figure:
    """A mesh figure coloured by each vertex's displacement from the neutral face."""
    triangles = rig.visible_triangles() if triangles is None else triangles
    return mesh_figure(vertices, triangles, intensity=displacement(rig, vertices), title=title)


def by_region(names: Sequence[str]) -> list[int]:
    """Indices of ``names`` ordered by face region (``REGIONS``), then as given."""
    return sorted(range(len(names)), key=lambda i: REGIONS.index(shape_region(names[i])))


def weights_figure(weights: np.ndarray, names: Sequence[str], top: int = 8) -> go.Figure:
    """Bars of (K,) weights, grouped and coloured by face region, the ``top`` largest named."""
    named = set(np.argsort(-weights)[:top].tolist())
    bars = []
    for region in REGIONS:
        index = [i for i, n in enumerate(names) if shape_region(n) == region]
        if index:
            bars.append(dict(x=[names[i] for i in index], y=weights[index], name=region,
                             text=[names[i] if i in named else "" for i in index],
                             textposition="outside", textangle=-90, cliponaxis=False,
                             hovertemplate="%{x}: %{y:.2f}<extra></extra>"))
    return _bar_figure(bars, layout={
        "height": 330, "margin": {"l": 40, "r": 10, "t": 70, "b": 10}, "bargap": 0.15,
        "title": {"text": f"blendshape weights by region (top {top} named)", "font": {"size": 13}},
        "yaxis": {"range": [0, 1.05], "title": "weight"}, "xaxis": {"showticklabels": False},
        "legend": {"orientation": "h", "y": 1.25, "font": {"size": 10}},
        "uniformtext": {"minsize": 8, "mode": "show"}})  # names at full size, not squeezed


def compare_figure(ours: np.ndarray, mediapipe: np.ndarray | None, names: Sequence[str],
                   fitted: np.ndarray | None = None) -> go.Figure:
    """Grouped bars: our regressed weights beside MediaPipe's scores and the weights of the rig
    fitted to the landmarks (``fitted``), shapes ordered by region (ours alone when MediaPipe
    found no landmarks on the face)."""
    order = by_region(names)
    x = [names[i] for i in order]
    bars = [dict(x=x, y=ours[order], name="BlendshapeFERNet (ours)")]
    if mediapipe is not None:
        bars.append(dict(x=x, y=mediapipe[order], name="MediaPipe"))
    if fitted is not None:
        bars.append(dict(x=x, y=fitted[order], name="rig fitted to the landmarks"))
    title = "ours vs MediaPipe, same face" if mediapipe is not None else \
        "ours (MediaPipe found no landmarks on this face)"
    return _bar_figure(bars, layout={
        "barmode": "group", "height": 330, "margin": {"l": 40, "r": 10, "t": 40, "b": 10},
        "title": {"text": title, "font": {"size": 13}},
        "yaxis": {"range": [0, 1.05]}, "xaxis": {"tickangle": -90, "tickfont": {"size": 8}},
        "legend": {"orientation": "h", "y": 1.12, "font": {"size": 10}}})


def _bar_figure(bars: list[dict], layout: dict) -> go.Figure:
    """A figure of bar traces given as plain dicts, built without plotly checking each property
    (``tests/test_plot.py`` checks these charts once, validated): the app draws two for every
    photo, and the checks took 20 of their 26 ms."""
    return go.Figure([{"type": "bar", **bar} for bar in bars], layout=layout, _validate=False)


def timeline_figure(times: np.ndarray, probabilities: np.ndarray, classes: Sequence[str],
                    weights: np.ndarray, names: Sequence[str], found: np.ndarray,
                    top: int = 6) -> go.Figure:
    """Expression probabilities (top) and the ``top`` weights with the largest mean (bottom)
    over time; frames without a face are marked on the time axis."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("expression", f"top {top} weights"))
    for c, name in enumerate(classes):
        fig.add_scatter(x=times, y=probabilities[:, c], name=name, mode="lines", row=1, col=1)
    for i in np.argsort(-weights.mean(axis=0))[:top]:
        fig.add_scatter(x=times, y=weights[:, i], name=names[i], mode="lines", row=2, col=1)
    if not found.all():
        fig.add_scatter(x=times[~found], y=np.zeros((~found).sum()), name="no face",
                        mode="markers", marker={"symbol": "x", "color": "black"}, row=2, col=1)
    fig.update_layout(height=420, margin={"l": 40, "r": 10, "t": 30, "b": 30},
                      legend={"font": {"size": 9}})
    fig.update_yaxes(range=[0, 1])
    fig.update_xaxes(title_text="seconds", row=2, col=1)
    return fig

"""Interactive plotly views of a face: a Mesh3d figure updated in place, displacement heatmaps."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from bsviz.rig import Rig


def displacement(rig: Rig, vertices: np.ndarray) -> np.ndarray:
    """(..., V) float32 distance |T - b0| of each vertex from the neutral face, centimetres."""
    return np.linalg.norm(np.asarray(vertices, np.float32) - rig.neutral, axis=-1)


def mesh_figure(vertices: np.ndarray, faces: np.ndarray, intensity: np.ndarray | None = None,
                title: str = "", height: int = 600) -> go.Figure:
    """A plotly figure of one mesh (V, 3) with triangles (F, 3), seen from the front.

    ``intensity`` (V,) colours the vertices (e.g. ``displacement``) with a colour bar;
    without it the face is drawn in a flat skin tone.
    """
    v = np.asarray(vertices, np.float32)
    colour = ({"intensity": intensity, "colorscale": "Viridis",
               "colorbar": {"title": {"text": "|T-b0| cm"}}}
              if intensity is not None else {"color": "rgb(222,176,150)"})
    mesh = go.Mesh3d(x=v[:, 0], y=v[:, 1], z=v[:, 2], i=faces[:, 0], j=faces[:, 1],
                     k=faces[:, 2], flatshading=False, hoverinfo="skip",
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
        update["intensity"] = intensity
    with fig.batch_update():  # one message to the front end for a FigureWidget
        fig.data[0].update(update)


def heatmap_figure(rig: Rig, vertices: np.ndarray, faces: np.ndarray | None = None,
                   title: str = "displacement |T - b0|") -> go.Figure:
    """A mesh figure coloured by each vertex's displacement from the neutral face."""
    faces = rig.visible_faces() if faces is None else faces
    return mesh_figure(vertices, faces, intensity=displacement(rig, vertices), title=title)

"""Per-vertex colours: a rig's flat look by face group, and heatmaps of per-vertex values."""

from __future__ import annotations

import numpy as np
from plotly.colors import hex_to_rgb, sequential

from bsviz.rig.blend import displacement
from bsviz.rig.rig import Rig

# Flat colours by face-group name (substring match, first hit wins); others are skin.
IRIS, PUPIL = (0.30, 0.20, 0.13), (0.04, 0.03, 0.03)
GROUP_COLOURS = (("Iris", IRIS), ("Sclera", (0.93, 0.92, 0.90)),
                 ("Teeth", (0.93, 0.90, 0.82)), ("Gums", (0.72, 0.36, 0.38)),
                 ("Lash", (0.12, 0.09, 0.08)))
SKIN = (0.86, 0.68, 0.58)


def vertex_colours(rig: Rig) -> np.ndarray:
    """(V, 3) float32 colours in [0, 1]: each vertex takes its face group's colour."""
    group_rgb = np.array([next((c for key, c in GROUP_COLOURS if key in name), SKIN)
                          for name in rig.group_names], np.float32)
    colours = np.tile(np.float32(SKIN), (rig.n_vertices, 1))
    colours[rig.triangles.ravel()] = np.repeat(group_rgb[rig.triangle_groups], 3, axis=0)
    # ICT's sclera is a whole ball over its iris (a transparent cornea in Unreal): paint
    # its front with an iris (a quarter of the ball's width in radius, as in a human eye)
    # and a pupil.
    for g, name in enumerate(rig.group_names):
        if "Sclera" not in name:
            continue
        ids = np.unique(rig.triangles[rig.triangle_groups == g])
        ball = rig.neutral[ids]
        lo, hi = ball.min(axis=0), ball.max(axis=0)
        centre, width = (lo + hi) / 2, hi[0] - lo[0]
        r = np.linalg.norm(ball[:, :2] - centre[:2], axis=1)
        front = ball[:, 2] > centre[2]
        colours[ids[front & (r < 0.25 * width)]] = IRIS
        colours[ids[front & (r < 0.1 * width)]] = PUPIL
    return colours


def heat_colours(values: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """(V, 3) float32 RGB in [0, 1] for per-vertex values (V,) on plotly's Viridis scale.

    0 maps to the low end, ``vmax`` (default: the largest value) to the high end.
    """
    values = np.asarray(values, np.float64)
    top = float(values.max()) if vmax is None else float(vmax)
    t = np.clip(values / top, 0, 1) if top > 0 else np.zeros_like(values)
    stops = np.linspace(0, 1, len(sequential.Viridis))
    rgb = np.array([hex_to_rgb(c) for c in sequential.Viridis], np.float64) / 255
    return np.stack([np.interp(t, stops, rgb[:, c]) for c in range(3)], axis=1).astype(np.float32)


def face_colours(rig: Rig, vertices: np.ndarray, heatmap: bool = False) -> np.ndarray:
    """(V, 3) colours of a face: the rig's flat look, or its displacement |T - b0| as a heatmap."""
    return heat_colours(displacement(rig, vertices)) if heatmap else vertex_colours(rig)

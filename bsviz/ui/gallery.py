"""Look at labels: face images beside their blendshape weights and the rig posed with them.

For per-class summaries of a label file use ``labels.top_table(labels.class_means(...), names)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bsviz.files import atomic_path
from bsviz.rig.blend import blend
from bsviz.rig.render import Renderer
from bsviz.rig.rig import Rig


def label_grid(images: np.ndarray, weights: np.ndarray, names: Sequence[str], rig: Rig,
               n: int = 8, out: str | Path | None = None, top: int = 10,
               titles: Sequence[str] | None = None, render_size: int = 192) -> Figure:
    """A row per face: the image, its ``top`` largest weights as bars, the rig with those weights.

    images : (N, 1, H, W) or (N, H, W) gray, uint8 or float in [0, 1]
    weights : (N, K) float in the order of ``names`` (the rig's), rendered clipped to [0, 1];
        a row with NaN (no face found) shows no bars and no render
    n : how many faces, the first n rows
    out : also save the figure here as PNG (atomically)
    titles : (N,) optional text over each image (e.g. the class)
    Returns a matplotlib Figure with 3 axes per face.
    """
    images, weights = np.asarray(images), np.asarray(weights, np.float32)
    if images.ndim == 4:
        images = images[:, 0]
    if images.ndim != 3 or weights.ndim != 2 or len(images) != len(weights):
        raise ValueError(f"expected images (N, [1,] H, W) and weights (N, K) with the same N, "
                         f"got {images.shape} and {weights.shape}")
    if tuple(names) != rig.names:
        raise ValueError(f"weights must be named like the rig's {rig.n_shapes} shapes")
    n = min(n, len(images))
    vmax = 255 if images.dtype == np.uint8 else 1
    fig = Figure(figsize=(9, 2.4 * n), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False, width_ratios=(1, 1.6, 1))
    with Renderer(rig, render_size) as renderer:
        for i, (image_ax, bar_ax, rig_ax) in enumerate(axes):
            image_ax.imshow(images[i], cmap="gray", vmin=0, vmax=vmax)
            image_ax.set_title(titles[i] if titles is not None else f"#{i}", fontsize=9)
            for ax in (image_ax, rig_ax):
                ax.set_axis_off()
            if not np.isfinite(weights[i]).all():
                bar_ax.text(0.5, 0.5, "no face found", ha="center", va="center")
                bar_ax.set_axis_off()
                continue
            order = np.argsort(-weights[i])[:top][::-1]  # largest at the top
            bar_ax.barh(range(len(order)), weights[i, order], color="tab:blue")
            bar_ax.set_yticks(range(len(order)), [names[k] for k in order], fontsize=7)
            bar_ax.set_xlim(0, 1)
            bar_ax.tick_params(axis="x", labelsize=7)
            rig_ax.imshow(renderer.render(blend(rig, np.clip(weights[i], 0, 1))))
    if out is not None:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    return fig

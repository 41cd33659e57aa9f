"""Drawing over photos: the boxes of the faces found, and a fitted mesh as it sits in the photo."""

from __future__ import annotations

import cv2
import numpy as np


def fit_to(rgb: np.ndarray, size: int = 512) -> np.ndarray:
    """(H', W', 3) uint8: ``rgb`` scaled to ``size`` px on its longer side (itself if it is)."""
    if max(rgb.shape[:2]) == size:
        return rgb
    scale = size / max(rgb.shape[:2])
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def draw_boxes(rgb: np.ndarray, boxes: list[np.ndarray], labels: list[str] | None = None,
               size: int = 512, selected: int = 0) -> np.ndarray:
    """(H', W', 3) uint8: ``rgb`` scaled to ``size`` px on its longer side, with each face box
    (x0, y0, x1, y1, in ``rgb``'s pixels) drawn and its label written above it; the
    ``selected`` one in green, the others in yellow."""
    scale = size / max(rgb.shape[:2])
    shown = fit_to(rgb, size).copy()
    thickness = max(1, round(max(shown.shape[:2]) / 200))
    for i, box in enumerate(boxes):
        colour = (0, 220, 0) if i == selected else (240, 200, 0)
        x0, y0, x1, y1 = np.round(np.asarray(box) * scale).astype(int).tolist()
        cv2.rectangle(shown, (x0, y0), (x1, y1), colour, thickness)
        if labels:
            scale_text = max(0.35, min(0.6, (x1 - x0) / 120))
            (w, h), base = cv2.getTextSize(labels[i], cv2.FONT_HERSHEY_SIMPLEX, scale_text, 1)
            top = max(y0 - h - base - 2, 0)
            cv2.rectangle(shown, (x0, top), (x0 + w + 4, top + h + base + 2), colour, -1)
            cv2.putText(shown, labels[i], (x0 + 2, top + h + 1), cv2.FONT_HERSHEY_SIMPLEX,
                        scale_text, (0, 0, 0), 1, cv2.LINE_AA)
    return shown


def draw_mesh(rgb: np.ndarray, points: np.ndarray, triangles: np.ndarray,
              colour: tuple[int, int, int] = (80, 200, 255), alpha: float = 0.45,
              size: int = 512) -> np.ndarray:
    """(H', W', 3) uint8: ``rgb`` scaled to ``size`` px on its longer side, with the mesh's
    edges drawn over it, semi-transparent (``alpha``), only the triangles facing the camera.

    points : (V, 3) vertices in ``rgb``'s pixels (x, y; z the depth, larger farther), e.g.
        ``Fit.to_image`` of the fitted face
    triangles : (F, 3) int the triangles to draw
    """
    scale = size / max(rgb.shape[:2])
    shown = fit_to(rgb, size)
    xy = np.asarray(points, np.float64)[:, :2] * scale
    tri = xy[triangles]                                                       # (F, 3, 2)
    # facing the camera: counter-clockwise in the rig, so clockwise with y pointing down
    edge1, edge2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    facing = edge1[:, 0] * edge2[:, 1] - edge1[:, 1] * edge2[:, 0] < 0
    lines = np.round(tri[facing] * 16).astype(np.int32)  # 4 fractional bits
    layer = shown.copy()
    cv2.polylines(layer, list(lines), True, colour, 1, cv2.LINE_AA, shift=4)
    return cv2.addWeighted(layer, alpha, shown, 1 - alpha, 0)

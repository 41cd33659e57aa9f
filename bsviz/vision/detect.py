"""Face detection at any size: MediaPipe's BlazeFace, run as one convolution over a pyramid.

The landmarker bundle (``face_landmarker.task``) carries BlazeFace short-range
(``face_detector.tflite``), which MediaPipe runs on the whole image squeezed to 128x128 px:
it finds faces that fill a quarter of the frame or more, a selfie's, not a group photo's.
BlazeFace is fully convolutional up to its heads, so here OpenCV's TFLite runtime runs the
bundle's file on the whole image at native resolution and at scales a third apart, and reads
the four heads before the graph's fixed 896-anchor reshape: every 8 px (16 px for the larger
anchors) of every level is an anchor, exactly as one 128 px tile would see it, so faces of
about 26-100 px are found at each level (a range wider than the step), 40 px and up over the
pyramid, in one pass per level instead of hundreds of tiles. No torch: ``bsviz predict``
starts without it.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bsviz.assets import landmarker_path

MIN_FACE = 40        # px; the smallest face looked for (it spans 32 px on the finest level)
MIN_SCORE = 0.5      # BlazeFace's own threshold
NMS_IOU = 0.3        # boxes overlapping more than this are one face
LEVEL_STEP = 3       # each pyramid level this many times smaller than the last: halving took
                     # 335 ms against 276 (p50, 1920x1080) and found 385 of 420 composite faces
                     # of 70-420 px against 383 (bench_faces' composites, found by find_all)
HEADS = ("classificator_8", "regressor_8", "classificator_16", "regressor_16")


def read_blazeface(bundle: str | Path | None = None) -> cv2.dnn.Net:
    """The bundle's ``face_detector.tflite`` as an OpenCV network (any input size that is a
    multiple of 16: (1, 3, H, W) float32 in [-1, 1])."""
    bundle = landmarker_path() if bundle is None else Path(bundle)
    with zipfile.ZipFile(bundle) as z:
        tflite = np.frombuffer(z.read("face_detector.tflite"), np.uint8)
    return cv2.dnn.readNetFromTFLite(tflite)


def run_heads(net: cv2.dnn.Net, image: np.ndarray) -> list[np.ndarray]:
    """BlazeFace's raw heads for one image (H, W, 3) float32 in [-1, 1], H and W multiples of
    16: scores8 (H/8, W/8, 2), boxes8 (H/8, W/8, 2, 16), scores16 (H/16, W/16, 6),
    boxes16 (H/16, W/16, 6, 16), logits and box regressions per anchor in TFLite's order."""
    net.setInput(np.ascontiguousarray(image.transpose(2, 0, 1))[None])
    s8, b8, s16, b16 = (out[0][0].transpose(1, 2, 0) for out in net.forwardAndRetrieve(HEADS))
    return [s8, b8.reshape(*b8.shape[:2], 2, 16), s16, b16.reshape(*b16.shape[:2], 6, 16)]


@dataclass
class Detection:
    """One face found by the detector: box (4,) x0, y0, x1, y1 in image pixels; score in [0, 1];
    keypoints (6, 2): the eyes, nose tip, mouth, and the ear tragions, in image pixels."""

    box: np.ndarray
    score: float
    keypoints: np.ndarray


class FaceDetector:
    """Every face of ``min_face`` px and larger in an image, at any position.

    ``detect(rgb)`` runs BlazeFace over a pyramid of the image (the finest level scaled so that
    a ``min_face`` face spans 32 px, then ``LEVEL_STEP`` times smaller until a level is 128 px
    or smaller) and merges the levels' boxes by non-maximum suppression.
    """

    def __init__(self, min_face: int = MIN_FACE, min_score: float = MIN_SCORE,
                 bundle: str | Path | None = None):
        self.net = read_blazeface(bundle)
        self.min_face, self.min_score = min_face, min_score

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """rgb: (H, W, 3) uint8 -> detections, largest first."""
        height, width = rgb.shape[:2]
        scale = min(1.0, 32 / self.min_face * 1.0) if min(height, width) > 128 else 1.0
        found = []
        while True:
            h, w = max(16, round(height * scale)), max(16, round(width * scale))
            found.append(self._level(rgb, scale, h, w))
            if max(h, w) <= 128:
                break
            scale /= LEVEL_STEP
        boxes = np.concatenate([f[0] for f in found])
        scores = np.concatenate([f[1] for f in found])
        points = np.concatenate([f[2] for f in found])
        keep = _nms(boxes, scores, NMS_IOU)
        clip = np.array([width, height, width, height], np.float32)
        out = [Detection(np.clip(boxes[i], 0, clip), float(scores[i]), points[i]) for i in keep]
        return sorted(out, key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))

    def _level(self, rgb: np.ndarray, scale: float, h: int, w: int):
        """Boxes (N, 4), scores (N,), keypoints (N, 6, 2) in image pixels at one scale."""
        image = rgb if (h, w) == rgb.shape[:2] else cv2.resize(
            rgb, (w, h), interpolation=cv2.INTER_AREA)
        ph, pw = max(128, -(-h // 16) * 16), max(128, -(-w // 16) * 16)
        image = cv2.copyMakeBorder(image, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT, value=0)
        s8, b8, s16, b16 = run_heads(self.net, image.astype(np.float32) / 127.5 - 1)
        boxes, scores, points = [], [], []
        for logits, raw, stride in ((s8, b8, 8), (s16, b16, 16)):  # (h, w, A), (h, w, A, 16)
            ys, xs, anchors = np.nonzero(logits > np.log(self.min_score / (1 - self.min_score)))
            r = raw[ys, xs, anchors]                               # (n, 16)
            centre = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], 1)
            mid, size = centre + r[:, :2], r[:, 2:4]
            boxes.append(np.hstack([mid - size / 2, mid + size / 2]) / scale)
            scores.append(1 / (1 + np.exp(-np.clip(logits[ys, xs, anchors], -100, 100))))
            points.append((centre[:, None] + r[:, 4:].reshape(-1, 6, 2)) / scale)
        return (np.concatenate(boxes).astype(np.float32), np.concatenate(scores),
                np.concatenate(points).astype(np.float32))


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    order, keep = list(np.argsort(-scores)), []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        i = order.pop(0)
        keep.append(i)
        if not order:
            break
        rest = np.array(order)
        lo = np.maximum(boxes[i, :2], boxes[rest, :2])
        hi = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        overlap = inter / (area[i] + area[rest] - inter)
        order = [j for j, o in zip(order, overlap) if o <= iou]
    return keep

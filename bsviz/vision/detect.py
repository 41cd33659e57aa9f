"""Face detection at any size: MediaPipe's BlazeFace, run as one convolution over a pyramid.

The landmarker bundle (``face_landmarker.task``) carries BlazeFace short-range
(``face_detector.tflite``), which MediaPipe runs on the whole image squeezed to 128x128 px:
it finds faces that fill a quarter of the frame or more, a selfie's, not a group photo's.
BlazeFace is fully convolutional up to its heads, so here its weights (read from the bundle
with OpenCV's TFLite importer) run in torch over the whole image at native resolution and
at scales a third apart: every 8 px (16 px for the larger anchors) of every level is an
anchor, exactly as one 128 px tile would see it, so faces of about 26-100 px are found at each
level (a range wider than the step), 40 px and up over the pyramid, in one pass per level
instead of hundreds of tiles.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bsviz.assets import landmarker_path

MIN_FACE = 40        # px; the smallest face looked for (it spans 32 px on the finest level)
MIN_SCORE = 0.5      # BlazeFace's own threshold
NMS_IOU = 0.3        # boxes overlapping more than this are one face
LEVEL_STEP = 3       # each pyramid level this many times smaller than the last: halving took
                     # 335 ms against 276 (p50, 1920x1080) and found 385 of 420 composite faces
                     # of 70-420 px against 383 (bench_faces' composites, found by find_all)
# (channels in, channels out, stride) of the 16 BlazeBlocks after the first 5x5 convolution.
BLOCKS = ((24, 24, 1), (24, 28, 1), (28, 32, 2), (32, 36, 1), (36, 42, 1), (42, 48, 2),
          (48, 56, 1), (56, 64, 1), (64, 72, 1), (72, 80, 1), (80, 88, 1),
          (88, 96, 2), (96, 96, 1), (96, 96, 1), (96, 96, 1), (96, 96, 1))


def _wide(channels: int) -> int:
    """Channels rounded up to a multiple of 8, the block of channels oneDNN's AVX2 kernels work
    in (with the padding-free stride-2 kernels, 7-10 % faster in interleaved runs; each alone
    was not measured). The added channels have zero weights, so they stay zero and the network
    computes the same."""
    return -(-channels // 8) * 8


class BlazeFace(nn.Module):
    """BlazeFace short-range as a fully convolutional network.

    forward(images (B, 3, H, W) float in [-1, 1], H and W multiples of 16) ->
    scores8 (B, H/8, W/8, 2), boxes8 (B, H/8, W/8, 2, 16), scores16 (B, H/16, W/16, 6),
    boxes16 (B, H/16, W/16, 6, 16): raw logits and box regressions per anchor.
    """

    def __init__(self) -> None:
        super().__init__()
        # TFLite's SAME padding at stride 2 (none before, the rest after) as a kernel one larger
        # whose leading row and column are zero, with symmetric padding: no padded copy
        self.first = nn.Conv2d(3, 24, 6, stride=2, padding=2)
        self.depthwise = nn.ModuleList(nn.Conv2d(_wide(i), _wide(i), 3 + (s == 2), stride=s,
                                                 padding=1, groups=_wide(i)) for i, _, s in BLOCKS)
        self.pointwise = nn.ModuleList(nn.Conv2d(_wide(i), _wide(o), 1) for i, o, _ in BLOCKS)
        self.classify8, self.classify16 = nn.Conv2d(88, 2, 1), nn.Conv2d(96, 6, 1)
        self.regress8, self.regress16 = nn.Conv2d(88, 32, 1), nn.Conv2d(96, 96, 1)

    def forward(self, x: torch.Tensor):
        x = self.first(x).relu_()
        for k, ((_, _, s), dw, pw) in enumerate(zip(BLOCKS, self.depthwise, self.pointwise)):
            out = pw(dw(x))
            if s == 2:
                x = F.max_pool2d(x, 2)
            out[:, :x.shape[1]] += x  # the skip connection, zero-padded to the new channels
            x = out.relu_()
            if k == 10:
                fine = x  # stride 8, 88 channels
        b, _, h8, w8 = fine.shape
        h16, w16 = x.shape[2:]
        nhwc = lambda t: t.permute(0, 2, 3, 1)  # noqa: E731 (anchors in TFLite's order)
        return (nhwc(self.classify8(fine)), nhwc(self.regress8(fine)).reshape(b, h8, w8, 2, 16),
                nhwc(self.classify16(x)), nhwc(self.regress16(x)).reshape(b, h16, w16, 6, 16))

    @classmethod
    def from_bundle(cls, bundle: str | Path | None = None) -> BlazeFace:
        """The network with the weights of the landmarker bundle's ``face_detector.tflite``."""
        bundle = landmarker_path() if bundle is None else Path(bundle)
        with zipfile.ZipFile(bundle) as z:
            tflite = np.frombuffer(z.read("face_detector.tflite"), np.uint8)
        net = cv2.dnn.readNetFromTFLite(tflite)
        names = ["conv2d"] + [n for k in range(16) for n in (
            "depthwise_conv2d" + (f"_{k}" if k else ""), f"conv2d_{k + 1}")] + [
            "classificator_8", "classificator_16", "regressor_8", "regressor_16"]
        model = cls()
        convs = [model.first] + [c for pair in zip(model.depthwise, model.pointwise)
                                 for c in pair] + [model.classify8, model.classify16,
                                                   model.regress8, model.regress16]
        with torch.no_grad():
            for name, conv in zip(names, convs):
                weight, bias = net.getLayer(name).blobs
                k = conv.kernel_size[0] - (conv.stride[0] == 2)  # the bundle's kernel size
                weight = torch.from_numpy(weight).reshape(bias.size, -1, k, k)
                conv.weight.zero_()[:bias.size, :weight.shape[1], -k:, -k:] = weight
                conv.bias.zero_()[:bias.size] = torch.from_numpy(bias).reshape(-1)
        # channels-last: oneDNN runs the depthwise convolutions about twice as fast so
        return model.eval().to(memory_format=torch.channels_last)


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
        self.net = BlazeFace.from_bundle(bundle)
        self.min_face, self.min_score = min_face, min_score

    @torch.no_grad()
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
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1  # NHWC memory
        s8, b8, s16, b16 = self.net(x)
        boxes, scores, points = [], [], []
        for logits, raw, stride in ((s8, b8, 8), (s16, b16, 16)):
            logits, raw = logits[0].numpy(), raw[0].numpy()        # (h, w, A), (h, w, A, 16)
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

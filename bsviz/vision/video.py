"""Video input: the frames of a file (evenly subsampled, scaled down) and smoothing over time."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from bsviz.vision.image import ImageError, check_image_size

MAX_FRAMES = 300  # longer videos are evenly subsampled to this many frames
MAX_SIDE = 640    # px; frames are scaled down to this longer side
SMOOTHING = 0.5   # weight of the newest frame in the moving average


class VideoFrames:
    """The frames of a video file (OpenCV), evenly subsampled to at most ``max_frames``.

    Iterating gives (H, W, 3) uint8 RGB frames, the longer side at most ``max_side``;
    ``fps`` is the rate of the frames kept, ``stride`` how many file frames each stands for.
    Raises ImageError for a file OpenCV cannot decode or frames too small or large for a face.
    """

    def __init__(self, path: str | Path, max_frames: int = MAX_FRAMES, max_side: int = MAX_SIDE):
        self.path, self.max_frames, self.max_side = Path(path), max_frames, max_side
        capture = cv2.VideoCapture(str(path))
        ok, first = capture.read()
        count, fps = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
        capture.release()
        if not ok:
            raise ImageError(f"{self.path.name} is not a readable video file (use MP4 or WebM)")
        check_image_size(self.path.name, first.shape[1], first.shape[0])
        self.total = int(count) if count > 0 else None  # some containers do not say
        self.stride = math.ceil(self.total / max_frames) if self.total else 1
        self.fps = (fps if fps > 0 else 30.0) / self.stride

    def __iter__(self) -> Iterator[np.ndarray]:
        capture = cv2.VideoCapture(str(self.path))
        try:
            kept, index = 0, 0
            while kept < self.max_frames and capture.grab():
                if index % self.stride == 0:
                    ok, bgr = capture.retrieve()
                    if not ok:
                        break
                    scale = min(1.0, self.max_side / max(bgr.shape[:2]))
                    bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                    kept += 1
                    yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            capture.release()


def smooth(values: np.ndarray, alpha: float = SMOOTHING) -> np.ndarray:
    """(T, K) exponential moving average over frames: s_t = alpha x_t + (1 - alpha) s_{t-1}.

    Rows with NaN (frames without a face) keep the previous value; leading ones take the
    first face's. Raises ValueError if no row is finite.
    """
    values = np.asarray(values, np.float32)
    found = np.isfinite(values).all(axis=1)
    if not found.any():
        raise ValueError("no frame has values to smooth")
    out = np.empty_like(values)
    state = values[np.argmax(found)]
    for t in range(len(values)):  # frames, not vertices: a few hundred at most
        if found[t]:
            state = alpha * values[t] + (1 - alpha) * state
        out[t] = state
    return out

"""Find a face in any photo with MediaPipe FaceLandmarker; landmarks, blendshapes, aligned crop.

The landmarker (the shipped ``face_landmarker.task`` bundle) gives per face 478 landmarks
and 52 blendshape scores (``_neutral`` + 51 ARKit names, ``scores.BLENDSHAPE_NAMES``). Its face
detector misses small faces that fill the frame, such as the 48x48 dataset crops,
so small inputs are upscaled (cubic) and pasted on a grey canvas first: on
FER2013 this finds ~93% of faces instead of ~80% (see benchmarks/bench_labels.py).

Creating a landmarker costs ~0.1 s: make one ``FaceFinder`` per process (never share
it with forked workers) and call ``find`` on it as often as needed.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bsviz.assets import landmarker_path
from bsviz.vision.image import ImageSource, read_rgb
from bsviz.vision.scores import BLENDSHAPE_NAMES

# Small inputs (short side < SMALL px) are scaled to UPSCALE px on their short side and
# padded by PAD px of grey on every side: a 48x48 crop becomes 192 px on a 350 px canvas.
SMALL, UPSCALE, PAD, GREY = 128, 192, 79, 128
EYE_CORNERS = ((33, 133), (362, 263))  # mesh indices: eye in the image's left, right half


class NoFaceError(ValueError):
    """No face was found in an image."""


@dataclass
class Face:
    """One face found in an image.

    Attributes
    ----------
    box : (4,) float32 x0, y0, x1, y1 in input pixels, the landmarks' extent clipped to the image
    landmarks : (478, 3) float32 x, y in input pixels; z (depth) in the same pixel scale
    blendshapes : (52,) float32 scores in [0, 1], named by ``BLENDSHAPE_NAMES``
    crop : (size, size) float32 in [0, 1], grayscale (or (size, size, 3) RGB): the face
        rotated so the eyes are level, square with a margin, the network's input
    """

    box: np.ndarray
    landmarks: np.ndarray
    blendshapes: np.ndarray
    crop: np.ndarray

    @property
    def scores(self) -> dict[str, float]:
        """The blendshape scores by MediaPipe name."""
        return dict(zip(BLENDSHAPE_NAMES, self.blendshapes.tolist()))


class FaceFinder:
    """A FaceLandmarker and the pre/post-processing around it; use one per process.

    ``with FaceFinder() as finder: face = finder.find(photo)``
    """

    def __init__(self, model_path: str | Path | None = None, max_faces: int = 4):
        import mediapipe as mp  # imported here: slow, and only face finding needs it
        from mediapipe.tasks.python import BaseOptions, vision

        model_path = landmarker_path() if model_path is None else model_path
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"FaceLandmarker bundle not found: {model_path}")
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            output_face_blendshapes=True, num_faces=max_faces)
        self._mp = mp
        # Building the landmarker, MediaPipe's C++ code logs straight to fd 2 ("Logging before
        # InitGoogle()", "W0000 ... xnnpack", "Feedback manager requires ...") whatever
        # GLOG_minloglevel or TF_CPP_MIN_LOG_LEVEL say: fd 2 is /dev/null meanwhile. A failure
        # still raises, with MediaPipe's message; what comes later reaches stderr as before.
        import os
        import sys

        sys.stderr.flush()
        stderr, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
        finally:
            os.dup2(stderr, 2)
            os.close(stderr)
            os.close(null)
        # Close before Python stops MediaPipe's executor threads, which happens before atexit
        # handlers run (a landmarker closed later prints errors at exit).
        threading._register_atexit(self.close)

    def __enter__(self) -> FaceFinder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def find_all(self, image: ImageSource, crop_size: int = 48, gray: bool = True,
                 margin: float = 0.1) -> list[Face]:
        """Every face in ``image`` (path, PIL image or array), largest first; maybe empty.

        See ``find`` for the arguments.
        """
        rgb = read_rgb(image)
        canvas, scale, pad = _prepare(rgb)
        result = self._landmarker.detect(
            self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=canvas))
        faces = []
        height, width = rgb.shape[:2]
        size = np.array([canvas.shape[1], canvas.shape[0], canvas.shape[1]], np.float32)
        for landmarks, blendshapes in zip(result.face_landmarks, result.face_blendshapes):
            points = np.array([(p.x, p.y, p.z) for p in landmarks], np.float32) * size
            points[:, :2] -= pad
            points /= scale  # canvas -> input pixels
            lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
            box = np.clip([lo[0], lo[1], hi[0], hi[1]], 0, [width, height, width, height])
            scores = {c.category_name: c.score for c in blendshapes}
            faces.append(Face(box=box.astype(np.float32), landmarks=points,
                              blendshapes=np.array([scores[n] for n in BLENDSHAPE_NAMES],
                                                   np.float32),
                              crop=aligned_crop(rgb, points, crop_size, gray, margin)))
        area = lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])  # noqa: E731
        return sorted(faces, key=area, reverse=True)

    def find(self, image: ImageSource, crop_size: int = 48, gray: bool = True,
             margin: float = 0.1) -> Face:
        """The face in ``image``: the largest one, with a warning if there are several.

        image : path, PIL image or array; gray, RGB, RGBA, 8/16-bit, any size
        crop_size : side of ``Face.crop`` in pixels
        gray : grayscale crop (the networks' input) or RGB
        margin : crop margin around the landmarks, as a fraction of the face size
        Raises NoFaceError when there is no face.
        """
        rgb = read_rgb(image)
        faces = self.find_all(rgb, crop_size, gray, margin)
        if not faces:
            what = image if isinstance(image, (str, Path)) else "image"
            raise NoFaceError(f"no face found in {what} ({rgb.shape[1]}x{rgb.shape[0]} px)")
        if len(faces) > 1:
            warnings.warn(f"{len(faces)} faces found; using the largest", stacklevel=2)
        return faces[0]


def _prepare(rgb: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The detector's input: (canvas (H', W', 3) uint8, scale, pad) with
    canvas pixel = input pixel * scale + pad. Small images are upscaled and padded."""
    short = min(rgb.shape[:2])
    if short >= SMALL:
        return rgb, 1.0, 0.0
    scale = UPSCALE / short
    big = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    canvas = cv2.copyMakeBorder(big, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=(GREY,) * 3)
    return canvas, scale, float(PAD)


def aligned_crop(rgb: np.ndarray, landmarks: np.ndarray, size: int = 48, gray: bool = True,
                 margin: float = 0.1) -> np.ndarray:
    """The face rotated so the eyes are level, cropped square around the landmarks.

    rgb : (H, W, 3) uint8
    landmarks : (478, 2+) face mesh points in pixels of ``rgb``
    Returns (size, size) float32 in [0, 1] if ``gray``, else (size, size, 3).
    """
    eyes = np.array([landmarks[list(corners), :2].mean(axis=0) for corners in EYE_CORNERS])
    dx, dy = eyes[1] - eyes[0]
    cos, sin = np.array([dx, dy]) / np.hypot(dx, dy)
    rotate = np.array([[cos, sin], [-sin, cos]])  # turns the eye line horizontal
    upright = landmarks[:, :2] @ rotate.T
    lo, hi = upright.min(axis=0), upright.max(axis=0)
    side = (hi - lo).max() * (1 + 2 * margin)  # crop side in input pixels
    # Crop at native resolution first: crop pixel (u, v) <- input pixel
    # rotate.T @ (corner + (u, v) * step) - 0.5 (landmarks count pixel edges, OpenCV centres).
    native = max(size, int(np.ceil(side)))
    step = side / native
    corner = (lo + hi) / 2 - side / 2 + step / 2
    to_input = np.hstack([rotate.T * step, (rotate.T @ corner)[:, None] - 0.5])
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if gray else rgb
    crop = cv2.warpAffine(image, to_input, (native, native),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    if native != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return crop.astype(np.float32) / 255


def draw_box(rgb: np.ndarray, box: np.ndarray, size: int = 512) -> np.ndarray:
    """(H', W', 3) uint8: ``rgb`` scaled to ``size`` px on its longer side, with the face
    ``box`` (x0, y0, x1, y1, in ``rgb``'s pixels) drawn in green."""
    scale = size / max(rgb.shape[:2])
    shown = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    x0, y0, x1, y1 = np.round(np.asarray(box) * scale).astype(int).tolist()
    thickness = max(1, round(max(shown.shape[:2]) / 200))
    return cv2.rectangle(shown, (x0, y0), (x1, y1), (0, 220, 0), thickness)

"""Every face in any photo: detection (``detect``), MediaPipe FaceLandmarker on each face's own
crop (478 landmarks, 52 blendshape scores), and the aligned crop the networks read.

Photos go through ``detect.FaceDetector`` (BlazeFace over an image pyramid: faces of 40 px and
up, anywhere), then the landmarker runs on a square crop around each detection, scaled so the
face fills it, as the landmarker expects. A detected face on which the landmarker finds none
is kept when the detector is sure of it (score >= ``BOX_ONLY_SCORE``), with no landmarks or
scores: its crop is taken from the detector's box and eye keypoints. Small inputs such as the
48x48 dataset crops (short side < ``SMALL``) are faces already: they are upscaled (cubic) and
pasted on a grey canvas for the landmarker, which finds ~93% of FER2013's faces that way
instead of ~80% (benchmarks/bench_labels.py), and fall back to the detector on that canvas.

Creating a finder costs ~0.1 s: make one ``FaceFinder`` per process (never share it with
forked workers) and call ``find_all`` or ``find`` on it as often as needed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bsviz.assets import landmarker_path
from bsviz.vision.detect import MIN_FACE, Detection, FaceDetector
from bsviz.vision.image import ImageSource, read_rgb
from bsviz.vision.scores import BLENDSHAPE_NAMES

# Small inputs (short side < SMALL px) are scaled to UPSCALE px on their short side and
# padded by PAD px of grey on every side: a 48x48 crop becomes 192 px on a 350 px canvas.
SMALL, UPSCALE, PAD, GREY = 128, 192, 79, 128
EYE_CORNERS = ((33, 133), (362, 263))  # mesh indices: eye in the image's left, right half
CONTEXT = 2.0         # the landmarker's crop: this many times the detector's box, square
LANDMARKER_SIDE = 256  # px; that crop's side as the landmarker sees it
BOX_ONLY_SCORE = 0.75  # a face the landmarker misses is kept above this detector score
MAX_FACES = 32         # faces analysed per image at most, largest first


class NoFaceError(ValueError):
    """No face was found in an image."""


@dataclass
class Face:
    """One face found in an image.

    Attributes
    ----------
    box : (4,) float32 x0, y0, x1, y1 in input pixels (the landmarks' extent, or the detector's
        box for a face without landmarks), clipped to the image
    landmarks : (478, 3) float32 x, y in input pixels, z (depth) in the same pixel scale;
        None when the landmarker found no face in the detected box
    blendshapes : (52,) float32 MediaPipe scores in [0, 1], named by ``BLENDSHAPE_NAMES``;
        None with the landmarks
    crop : (size, size) float32 in [0, 1], grayscale (or (size, size, 3) RGB): the face
        rotated so the eyes are level, square with a margin, the network's input
    found_by : "landmarker" (landmarks and scores), "detector" (a box only), or "whole image"
        (a small image taken as the face crop it is, when neither found a face in it)
    """

    box: np.ndarray
    landmarks: np.ndarray | None
    blendshapes: np.ndarray | None
    crop: np.ndarray
    found_by: str = "landmarker"

    @property
    def scores(self) -> dict[str, float]:
        """The blendshape scores by MediaPipe name ({} for a face without landmarks)."""
        return {} if self.blendshapes is None else dict(zip(BLENDSHAPE_NAMES,
                                                             self.blendshapes.tolist()))

    @property
    def area(self) -> float:
        """The box's area in square pixels."""
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


class _Deferred(types.ModuleType):
    """A stand-in in ``sys.modules`` that imports the real module on its first attribute use
    and from then on forwards every attribute to it (and leaves it in ``sys.modules``)."""

    def __getattr__(self, attr: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def _import_mediapipe():
    """``mediapipe``, imported without running the ``matplotlib.pyplot`` import of its drawing
    utilities (0.5 s of mediapipe's 1.0 s import on a 2-core machine), which face finding does
    not use: pyplot is ``_Deferred`` meanwhile, and so loads when first used, for whoever uses
    it."""
    if "matplotlib.pyplot" not in sys.modules and importlib.util.find_spec("matplotlib"):
        sys.modules["matplotlib.pyplot"] = _Deferred("matplotlib.pyplot")
    import mediapipe

    return mediapipe


class FaceFinder:
    """The face detector, a FaceLandmarker, and the pre/post-processing around them; use one
    per process. ``with FaceFinder() as finder: faces = finder.find_all(photo)``
    """

    def __init__(self, model_path: str | Path | None = None, min_face: int = MIN_FACE,
                 max_faces: int = MAX_FACES):
        mp = _import_mediapipe()
        from mediapipe.tasks.python import BaseOptions, vision

        model_path = landmarker_path() if model_path is None else Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"FaceLandmarker bundle not found: {model_path}")
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            output_face_blendshapes=True, num_faces=4)
        self._mp = mp
        # Building the landmarker, MediaPipe's C++ code logs straight to fd 2 ("Logging before
        # InitGoogle()", "W0000 ... xnnpack", "Feedback manager requires ...") whatever
        # GLOG_minloglevel or TF_CPP_MIN_LOG_LEVEL say: fd 2 is /dev/null meanwhile. A failure
        # still raises, with MediaPipe's message; what comes later reaches stderr as before.
        sys.stderr.flush()
        stderr, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
        finally:
            os.dup2(stderr, 2)
            os.close(stderr)
            os.close(null)
        self.detector = FaceDetector(min_face, bundle=model_path)
        self.max_faces = max_faces
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
                 margin: float = 0.1, whole_crops: bool = True,
                 landmarks_only: bool = False) -> list[Face]:
        """Every face in ``image`` (path, bytes, PIL image or array), largest first; maybe empty.

        See ``find`` for the arguments; ``whole_crops``: a small image in which neither the
        landmarker nor the detector finds a face is taken whole as the face crop it is (a
        dataset's 48 px crop), else it has none (a video frame); ``landmarks_only``: only the
        faces the landmarker found (no detector box, no whole crop: labelling needs scores).
        """
        rgb = read_rgb(image)

        def crop(points: np.ndarray, eyes: np.ndarray, pad: float = margin) -> np.ndarray:
            return _square_crop(rgb, points, eyes, crop_size, gray, pad)

        if min(rgb.shape[:2]) < SMALL:  # a face crop already, as the datasets' are
            canvas, scale, pad = _prepare(rgb)
            faces = [self._face(rgb, ((points - [pad, pad, 0]) / scale).astype(np.float32),
                                scores, crop) for points, scores in self._landmark(canvas)]
            faces.sort(key=lambda f: -f.area)
            if not faces and not landmarks_only:
                detections = self.detector.detect(canvas)
                if detections:
                    faces = [self._box_face(rgb, detections[0], crop, scale, pad)]
                elif whole_crops:
                    faces = [self._whole_face(rgb, crop)]
            return faces
        faces: list[Face] = []
        for detection in self.detector.detect(rgb):
            if len(faces) == self.max_faces:
                break
            face = self._landmark_detection(rgb, detection, crop)
            if face is None and detection.score >= BOX_ONLY_SCORE and not landmarks_only:
                face = self._box_face(rgb, detection, crop)
            if face is not None and not any(_same(face.box, f.box) for f in faces):
                faces.append(face)
        return sorted(faces, key=lambda f: -f.area)

    def find(self, image: ImageSource, crop_size: int = 48, gray: bool = True,
             margin: float = 0.1, whole_crops: bool = True) -> Face:
        """The face in ``image``: the largest one, with a warning if there are several.

        image : path, bytes, PIL image or array; gray, RGB, RGBA, 8/16-bit, any size
        crop_size : side of ``Face.crop`` in pixels
        gray : grayscale crop (the networks' input) or RGB
        margin : crop margin around the landmarks, as a fraction of the face size
        Raises NoFaceError when there is no face.
        """
        rgb = read_rgb(image)
        faces = self.find_all(rgb, crop_size, gray, margin, whole_crops)
        if not faces:
            what = image if isinstance(image, (str, Path)) else "image"
            raise NoFaceError(f"no face found in {what} ({rgb.shape[1]}x{rgb.shape[0]} px)")
        if len(faces) > 1:
            warnings.warn(f"{len(faces)} faces found; using the largest", stacklevel=2)
        return faces[0]

    def _landmark(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The landmarker on ``rgb`` as it is: per face, (478, 3) points in ``rgb``'s pixels
        and (52,) scores."""
        result = self._landmarker.detect(
            self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb))
        size = np.array([rgb.shape[1], rgb.shape[0], rgb.shape[1]], np.float32)
        out = []
        for landmarks, blendshapes in zip(result.face_landmarks, result.face_blendshapes):
            points = np.array([(p.x, p.y, p.z) for p in landmarks], np.float32) * size
            scores = {c.category_name: c.score for c in blendshapes}
            out.append((points, np.array([scores[n] for n in BLENDSHAPE_NAMES], np.float32)))
        return out

    def _landmark_detection(self, rgb: np.ndarray, detection: Detection, crop) -> Face | None:
        """The landmarker on a square window around ``detection`` (``CONTEXT`` times its box),
        scaled to ``LANDMARKER_SIDE`` px so the face fills it; the face nearest the window's
        centre, in ``rgb``'s pixels (None if it finds none)."""
        box = detection.box
        side = max(1, round(CONTEXT * float(max(box[2:] - box[:2]))))
        x0, y0 = np.round((box[:2] + box[2:]) / 2 - side / 2).astype(int)
        height, width = rgb.shape[:2]
        inside = rgb[max(y0, 0):min(y0 + side, height), max(x0, 0):min(x0 + side, width)]
        window = cv2.copyMakeBorder(inside, max(-y0, 0), max(y0 + side - height, 0),
                                    max(-x0, 0), max(x0 + side - width, 0),
                                    cv2.BORDER_CONSTANT, value=(GREY,) * 3)
        window = cv2.resize(window, (LANDMARKER_SIDE, LANDMARKER_SIDE),
                            interpolation=cv2.INTER_AREA if side > LANDMARKER_SIDE
                            else cv2.INTER_LINEAR)
        found = self._landmark(window)
        if not found:
            return None
        middle = LANDMARKER_SIDE / 2
        points, scores = min(found, key=lambda f: np.linalg.norm(f[0][:, :2].mean(0) - middle))
        step = side / LANDMARKER_SIDE  # input pixels per window pixel
        points = points * step + np.float32([x0, y0, 0])
        return self._face(rgb, points.astype(np.float32), scores, crop)

    @staticmethod
    def _face(rgb: np.ndarray, points: np.ndarray, scores: np.ndarray, crop) -> Face:
        height, width = rgb.shape[:2]
        lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
        box = np.clip([lo[0], lo[1], hi[0], hi[1]], 0, [width, height, width, height])
        eyes = np.array([points[list(c), :2].mean(axis=0) for c in EYE_CORNERS])
        return Face(box.astype(np.float32), points, scores, crop(points[:, :2], eyes))

    @staticmethod
    def _box_face(rgb: np.ndarray, detection: Detection, crop, scale: float = 1.0,
                  pad: float = 0.0) -> Face:
        """A face without landmarks: its box, and a crop levelled on the detector's eyes
        (keypoints 0 and 1: the eyes in the image's left and right half). ``scale`` and ``pad``
        map the detector's canvas back to ``rgb``'s pixels."""
        height, width = rgb.shape[:2]
        box = np.clip((detection.box - pad) / scale, 0, [width, height, width, height])
        corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]],
                            [box[2], box[3]]], np.float32)
        eyes = (detection.keypoints[:2] - pad) / scale
        return Face(box.astype(np.float32), None, None, crop(corners, eyes), "detector")

    @staticmethod
    def _whole_face(rgb: np.ndarray, crop) -> Face:
        """A small image as the face crop it is: the whole image, upright, no margin."""
        height, width = rgb.shape[:2]
        side = max(height, width)
        square = np.float32([[(width - side) / 2, (height - side) / 2],
                             [(width + side) / 2, (height + side) / 2]])
        face = crop(square, np.float32([[0, 0], [1, 0]]), 0.0)
        return Face(np.float32([0, 0, width, height]), None, None, face, "whole image")


def _same(a: np.ndarray, b: np.ndarray, iou: float = 0.5) -> bool:
    """Whether two boxes (x0, y0, x1, y1) overlap by more than ``iou``: one face."""
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    union = float(np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2])) - inter
    return union > 0 and inter / union > iou


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
    return _square_crop(rgb, landmarks[:, :2], eyes, size, gray, margin)


def _square_crop(rgb: np.ndarray, points: np.ndarray, eyes: np.ndarray, size: int, gray: bool,
                 margin: float) -> np.ndarray:
    """``rgb`` turned so that the ``eyes`` (2, 2) (image-left one first) are level, cropped to
    the square around ``points`` (N, 2) with ``margin`` (a fraction of its side) on each side."""
    dx, dy = eyes[1] - eyes[0]
    cos, sin = np.array([dx, dy]) / max(np.hypot(dx, dy), 1e-6)
    rotate = np.array([[cos, sin], [-sin, cos]])  # turns the eye line horizontal
    upright = points @ rotate.T
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

"""Inference: a trained network and a face finder, ready to classify the faces in photos.

``Predictor`` loads a trained network (by default the shipped BlendshapeFERNet) once and owns
a ``FaceFinder``; ``predict(image)`` finds the face with MediaPipe, crops it the way the
training images are framed, and runs the network. The app, the CLI and the notebooks all go
through here. Neither training code nor torch is imported: the network runs in numpy
(``numpy_net``), so ``bsviz predict`` gives its first result in about a second.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

from bsviz.assets import model_path as shipped_model
from bsviz.fer.checkpoints import read_checkpoint
from bsviz.fer.numpy_net import NumpyNet
from bsviz.rig.rig import load_rig, mirror_permutation
from bsviz.vision.faces import Face, FaceFinder
from bsviz.vision.fit import Fit, LandmarkFitter
from bsviz.vision.image import ImageError, ImageSource
from bsviz.vision.scores import to_ict


@dataclass
class Prediction:
    """What the network says about one face.

    classes : the model's class names; probabilities : (C,) softmax over them
    weights : (K,) regressed blendshape weights in [0, 1] (None for an image-only model)
    shape_names : the K rig shape names of ``weights``
    face : the detected face (box, landmarks, MediaPipe's 52 scores, the crop)
    fit : the rig fitted to the face's landmarks (pose, weights, NME); None without landmarks
    """

    classes: tuple[str, ...]
    probabilities: np.ndarray
    weights: np.ndarray | None
    shape_names: tuple[str, ...]
    face: Face
    fit: Fit | None = None

    @property
    def expression(self) -> str:
        return self.classes[int(np.argmax(self.probabilities))]

    @property
    def mediapipe_weights(self) -> np.ndarray | None:
        """(K,) MediaPipe's own scores for this face, mapped onto the rig's names (None for a
        face without landmarks)."""
        return None if self.face.blendshapes is None else to_ict(self.face.blendshapes)

    def as_dict(self) -> dict:
        """Plain JSON-able data: the face box (x0, y0, x1, y1, pixels), whether MediaPipe found
        its landmarks, the expression, probabilities and weights."""
        out = {"box": _rounded(self.face.box, 1), "found_by": self.face.found_by,
               "expression": self.expression,
               "probabilities": dict(zip(self.classes, _rounded(self.probabilities, 5)))}
        if self.weights is not None:
            out["weights"] = dict(zip(self.shape_names, _rounded(self.weights, 5)))
        if self.fit is not None:
            out["pose"] = {k: round(v, 2) for k, v in self.fit.pose.items()}
            out["fit"] = {"weights": dict(zip(self.shape_names, _rounded(self.fit.weights, 5))),
                          "identity": _rounded(self.fit.identity, 4),
                          "nme": round(self.fit.nme, 5)}
        return out


def _rounded(values: np.ndarray, decimals: int) -> list[float]:
    """Values as short JSON numbers (float32 0.59071 would print as 0.5907099843025208)."""
    return np.round(np.asarray(values, np.float64), decimals).tolist()


class Predictor:
    """A trained network, ready to classify faces. ``Predictor().predict("photo.jpg")``.

    With ``flip`` (the default) each crop is also run flipped left-right and the two views
    are averaged (test-time flip: the probabilities, and the weights with the flipped view's
    mirrored back), which raised PrivateTest accuracy in every FER2013 run (README, results).
    With ``fit`` (the default) the rig is also fitted to each face's landmarks
    (``vision.fit``: head pose, expression and identity weights, NME).
    """

    def __init__(self, model_path: str | Path | None = None, flip: bool = True, fit: bool = True):
        self.path = Path(model_path) if model_path else shipped_model()
        checkpoint = read_checkpoint(self.path)
        self.kind = checkpoint["kind"]
        self.classes = tuple(checkpoint["classes"])
        self.shape_names = tuple(checkpoint["shape_names"])
        self.net = NumpyNet(checkpoint)
        self._blas = ThreadpoolController()  # numpy's BLAS, run on one thread in predict_many
        self.image_size = self.net.image_size
        self.card = checkpoint.get("card", {})
        self.flip = flip
        self.mirror = mirror_permutation(self.shape_names)
        self._finder: FaceFinder | None = None
        self.fitter: LandmarkFitter | None = None
        if fit:
            rig = load_rig()
            if rig.names != self.shape_names:
                raise ValueError(f"the shape names of {self.path} are not the rig's; "
                                 "predict with fit=False")
            self.fitter = LandmarkFitter(rig)

    @property
    def finder(self) -> FaceFinder:
        """This predictor's FaceFinder, made on first use."""
        if self._finder is None:
            self._finder = FaceFinder()
        return self._finder

    def close(self) -> None:
        """Close the face finder (the network needs no closing)."""
        if self._finder is not None:
            self._finder.close()
            self._finder = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Network outputs for aligned grayscale crops (N, S, S) in [0, 1]:
        probabilities (N, C) (NaN for a blendshape-only model) and weights (N, K) (None for an
        image-only model)."""
        x = np.asarray(crops, np.float32)
        n = len(x)
        logits, weights = self.net(np.concatenate([x, x[:, :, ::-1]]) if self.flip else x)
        if logits is None:
            probabilities = np.full((len(weights), len(self.classes)), np.nan, np.float32)
        else:
            e = np.exp(logits - logits.max(1, keepdims=True))
            probabilities = e / e.sum(1, keepdims=True)
        if self.flip:
            probabilities = (probabilities[:n] + probabilities[n:]) / 2
            weights = None if weights is None else (weights[:n] + weights[n:, self.mirror]) / 2
        return probabilities, weights

    def predict(self, image: ImageSource, whole_crops: bool = True) -> Prediction:
        """Find the (largest) face in ``image`` (a path, PIL image or array) and classify it.

        Raises ``NoFaceError`` when there is none; warns when there are several.
        ``whole_crops``: see ``FaceFinder.find_all`` (off for video frames).
        """
        face = self.finder.find(image, crop_size=self.image_size, whole_crops=whole_crops)
        return self._classify([face])[0]

    def predict_all(self, image: ImageSource, whole_crops: bool = True) -> list[Prediction]:
        """Every face in ``image``, largest first (an empty list when there is none)."""
        return self._classify(self.finder.find_all(image, crop_size=self.image_size,
                                                   whole_crops=whole_crops))

    def predict_many(self, images: Iterable[ImageSource], whole_crops: bool = True,
                     ahead: int = 4) -> Iterator[list[Prediction] | Exception]:
        """``predict_all`` for each of ``images`` in turn: yields its predictions, or the
        ``ImageError`` / ``OSError`` that opening it raised. The faces of the next ``ahead``
        images are found (MediaPipe) in a background thread while the networks and the fit run
        on this one's, with one BLAS thread (OpenBLAS's spinning second thread would take the
        finder's core: 200 FER2013 crops took 10.6 s with it, 7.1 s without): about 1.5x the
        images per second of a ``predict_all`` loop on 2 cores (benchmarks/bench_faces.py)."""
        finder, images = self.finder, iter(images)

        def find(image: ImageSource) -> list[Face] | Exception:
            try:
                return finder.find_all(image, crop_size=self.image_size, whole_crops=whole_crops)
            except (ImageError, OSError) as e:
                return e

        with ThreadPoolExecutor(1, thread_name_prefix="bsviz-faces") as pool:
            pending = deque(pool.submit(find, image) for image in itertools.islice(images, ahead))
            while pending:
                found = pending.popleft().result()
                pending.extend(pool.submit(find, image) for image in itertools.islice(images, 1))
                if isinstance(found, Exception):
                    yield found
                    continue
                with self._blas.limit(limits=1, user_api="blas"):
                    predictions = self._classify(found)
                yield predictions

    def _classify(self, found: list[Face]) -> list[Prediction]:
        if not found:
            return []
        probabilities, weights = self.run(np.stack([face.crop for face in found]))
        return [Prediction(self.classes, probabilities[i],
                           None if weights is None else weights[i], self.shape_names, face,
                           None if self.fitter is None or face.landmarks is None
                           else self.fitter.fit(face.landmarks))
                for i, face in enumerate(found)]

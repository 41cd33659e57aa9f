"""Inference: photo -> face -> expression probabilities and blendshape weights -> 3D face.

``Predictor`` loads a trained network (by default the shipped BlendshapeFERNet in
``models/``) once; ``predict(image)`` finds the face with MediaPipe, crops it the way the
training images are framed, and runs the network. The app, the CLI and the notebooks
all go through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bsviz.faces import Face, default_finder
from bsviz.labels import to_ict
from bsviz.rig import mirror_permutation
from bsviz.train import load_checkpoint, model_from_checkpoint

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "blendshape_fernet.pt"


@dataclass
class Prediction:
    """What the network says about one face.

    classes : the model's class names; probabilities : (C,) softmax over them
    weights : (K,) regressed blendshape weights in [0, 1] (None for an image-only model)
    shape_names : the K rig shape names of ``weights``
    face : the detected face (box, landmarks, MediaPipe's 52 scores, the crop)
    """

    classes: tuple[str, ...]
    probabilities: np.ndarray
    weights: np.ndarray | None
    shape_names: tuple[str, ...]
    face: Face

    @property
    def expression(self) -> str:
        return self.classes[int(np.argmax(self.probabilities))]

    @property
    def mediapipe_weights(self) -> np.ndarray:
        """(K,) MediaPipe's own scores for this face, mapped onto the rig's names."""
        return to_ict(self.face.blendshapes)

    def as_dict(self) -> dict:
        """Plain JSON-able data: expression, probabilities, weights, face box."""
        out = {"expression": self.expression,
               "probabilities": dict(zip(self.classes, np.round(self.probabilities, 5).tolist())),
               "face_box": np.round(self.face.box, 1).tolist()}
        if self.weights is not None:
            out["weights"] = dict(zip(self.shape_names, np.round(self.weights, 5).tolist()))
        return out


class Predictor:
    """A trained network, ready to classify faces. ``Predictor().predict("photo.jpg")``.

    With ``flip`` (the default) each crop is also run flipped left-right and the two views
    are averaged (test-time flip: the probabilities, and the weights with the flipped view's
    mirrored back), which raised PrivateTest accuracy in every FER2013 run (README, results).
    """

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu",
                 flip: bool = True):
        path = Path(model_path) if model_path else SHIPPED_MODEL
        checkpoint = load_checkpoint(path)
        self.kind = checkpoint["kind"]
        self.classes = tuple(checkpoint["classes"])
        self.shape_names = tuple(checkpoint["shape_names"])
        config = checkpoint["model_config"]
        self.image_size = (config["image"] if self.kind == "two_stream" else config)["image_size"]
        self.model = model_from_checkpoint(checkpoint).float().to(device)
        self.device = torch.device(device)
        self.card = checkpoint.get("card", {})
        self.flip = flip
        self.mirror = mirror_permutation(self.shape_names)

    @torch.no_grad()
    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Network outputs for aligned grayscale crops (N, S, S) in [0, 1]:
        probabilities (N, C) and weights (N, K) (None for an image-only model)."""
        x = torch.as_tensor(np.asarray(crops, np.float32)[:, None], device=self.device)
        n = len(x)
        out = self.model(torch.cat([x, x.flip(3)]) if self.flip else x)
        if self.kind == "two_stream":
            probabilities, weights = torch.softmax(out.logits, 1), out.weights
        elif self.kind == "image":
            probabilities, weights = torch.softmax(out.output, 1), None
        else:
            probabilities = torch.full((len(out.output), len(self.classes)), torch.nan)
            weights = out.output
        if self.flip:
            probabilities = (probabilities[:n] + probabilities[n:]) / 2
            weights = None if weights is None else (weights[:n] + weights[n:, self.mirror]) / 2
        return probabilities.cpu().numpy(), None if weights is None else weights.cpu().numpy()

    def predict(self, image) -> Prediction:
        """Find the (largest) face in ``image`` (a path, PIL image or array) and classify it.

        Raises ``faces.NoFaceError`` when there is none; warns when there are several.
        """
        face = default_finder().find(image, crop_size=self.image_size)
        probabilities, weights = self.run(face.crop[None])
        return Prediction(self.classes, probabilities[0],
                          None if weights is None else weights[0], self.shape_names, face)

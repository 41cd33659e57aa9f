"""BlazeFace over an image pyramid: the same network as the bundle's TFLite file, faces found
at any size and position."""

import zipfile

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from bsviz.assets import example_paths, landmarker_path
from bsviz.vision.detect import BlazeFace, FaceDetector


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def face_image(size: int = 128) -> np.ndarray:
    return np.asarray(Image.open(example_paths()[0]).convert("RGB").resize((size, size)))


def test_torch_network_equals_the_bundles_tflite_run_by_opencv(detector):
    """OpenCV's own TFLite runtime on the bundle's face_detector.tflite is the reference."""
    tflite = zipfile.ZipFile(landmarker_path()).read("face_detector.tflite")
    net = cv2.dnn.readNetFromTFLite(np.frombuffer(tflite, np.uint8))
    x = (face_image().astype(np.float32) / 127.5 - 1).transpose(2, 0, 1)[None].copy()
    net.setInput(x)
    regressors, classificators = net.forward(["regressors", "classificators"])
    with torch.no_grad():
        s8, b8, s16, b16 = detector.net(torch.from_numpy(x))
    scores = torch.cat([s8.reshape(1, -1), s16.reshape(1, -1)], 1).numpy()
    boxes = torch.cat([b8.reshape(1, -1, 16), b16.reshape(1, -1, 16)], 1).numpy()
    assert scores.shape == (1, 896) and classificators.max() > 0  # the face scores high
    np.testing.assert_allclose(scores, classificators.reshape(1, -1), atol=2e-3)
    np.testing.assert_allclose(boxes, regressors, atol=2e-3)
    assert isinstance(BlazeFace.from_bundle(), BlazeFace)


def test_a_small_face_anywhere_in_a_large_photo_is_found(detector):
    canvas = np.full((1080, 1920, 3), 140, np.uint8)
    canvas[700:772, 1500:1572] = face_image(72)  # 72 px, far from the centre
    found = detector.detect(canvas)
    assert len(found) == 1
    x0, y0, x1, y1 = found[0].box
    assert 1480 < x0 < x1 < 1590 and 680 < y0 < y1 < 790 and found[0].score > 0.5
    eyes = found[0].keypoints[:2]
    assert (eyes[:, 0] > x0).all() and (eyes[:, 0] < x1).all() and eyes[0, 0] < eyes[1, 0]
    assert detector.detect(np.full((1080, 1920, 3), 140, np.uint8)) == []


def test_faces_of_many_sizes_one_box_each(detector):
    canvas = np.full((900, 1280, 3), 140, np.uint8)
    for x, size in ((40, 64), (260, 128), (560, 256), (900, 360)):
        canvas[100:100 + size, x:x + size] = face_image(size)
    found = detector.detect(canvas)
    assert len(found) == 4
    widths = [d.box[2] - d.box[0] for d in found]
    assert widths == sorted(widths, reverse=True)  # largest first

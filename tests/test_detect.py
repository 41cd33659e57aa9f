"""BlazeFace over an image pyramid: the bundle's TFLite file at any input size, faces found
at any size and position."""

import numpy as np
import pytest
from PIL import Image

from bsviz.assets import example_paths
from bsviz.vision.detect import FaceDetector, read_blazeface, run_heads


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def face_image(size: int = 128) -> np.ndarray:
    return np.asarray(Image.open(example_paths()[0]).convert("RGB").resize((size, size)))


def test_the_heads_read_at_any_size_are_the_graphs_own_anchors_at_128_px():
    """At the graph's own 128x128 input its final outputs (896 anchors) are the reference for
    the heads ``run_heads`` reads before that fixed-size reshape."""
    net = read_blazeface()
    x = face_image().astype(np.float32) / 127.5 - 1
    s8, b8, s16, b16 = run_heads(net, x)
    net.setInput(x.transpose(2, 0, 1)[None].copy())
    regressors, classificators = net.forward(["regressors", "classificators"])
    scores = np.concatenate([s8.reshape(1, -1), s16.reshape(1, -1)], 1)
    boxes = np.concatenate([b8.reshape(1, -1, 16), b16.reshape(1, -1, 16)], 1)
    assert s8.shape == (16, 16, 2) and b16.shape == (8, 8, 6, 16)
    assert scores.shape == (1, 896) and classificators.max() > 0  # the face scores high
    np.testing.assert_allclose(scores, classificators.reshape(1, -1), atol=1e-5)
    np.testing.assert_allclose(boxes, regressors.reshape(1, -1, 16), atol=1e-5)
    s8, _, s16, _ = run_heads(net, np.zeros((272, 480, 3), np.float32))  # any multiple of 16
    assert s8.shape == (34, 60, 2) and s16.shape == (17, 30, 6)


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

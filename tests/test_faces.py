"""Face finding on dataset crops and synthetic photos: inputs, errors, several faces, alignment."""


import numpy as np
import pytest
from conftest import SHARED  # noqa: E402
from PIL import Image

from bsviz.vision import faces
from bsviz.vision.faces import NoFaceError

HAPPY = SHARED / "data" / "ck+48" / "happy" / "S010_006_00000013.png"
SURPRISE = SHARED / "data" / "ck+48" / "surprise" / "S010_002_00000014.png"


@pytest.fixture(scope="module")
def finder():
    if not HAPPY.is_file() or not SURPRISE.is_file():
        pytest.skip(f"CK+ images not found under {SHARED}")
    with faces.FaceFinder() as finder:
        yield finder


def test_finds_one_face_in_a_ck_crop(finder):
    face = finder.find(HAPPY)
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48 and x1 - x0 > 30
    assert face.landmarks.shape == (478, 3) and face.blendshapes.shape == (52,)
    assert list(face.scores) == list(faces.BLENDSHAPE_NAMES)
    assert face.scores["mouthSmileLeft"] > 0.5 and face.scores["mouthSmileRight"] > 0.5
    assert face.crop.shape == (48, 48) and face.crop.dtype == np.float32
    assert 0 <= face.crop.min() and face.crop.max() <= 1
    assert finder.find(HAPPY, crop_size=64, gray=False).crop.shape == (64, 64, 3)


def test_blank_image_raises_no_face(finder):
    with pytest.raises(NoFaceError, match=r"^no face found in image \(300x200 px\)$"):
        finder.find(np.full((200, 300), 128, np.uint8))


def test_any_input_format(finder, tmp_path):
    gray = np.asarray(Image.open(HAPPY))
    expected = finder.find(gray).blendshapes
    sixteen = tmp_path / "face16.png"
    Image.fromarray(gray.astype(np.uint16) * 257).save(sixteen)
    big_rgba = Image.fromarray(gray).resize((320, 320), Image.BICUBIC).convert("RGBA")
    for image in (Image.open(HAPPY), np.stack([gray] * 3, -1), gray.astype(np.uint16) * 257,
                  sixteen, np.dstack([gray] * 3 + [np.full_like(gray, 255)])):
        assert np.allclose(finder.find(image).blendshapes, expected, atol=1e-4)
    face = finder.find(big_rgba)  # large input: no upscaling; box in input pixels
    assert face.box[2] - face.box[0] > 200
    assert face.scores["mouthSmileLeft"] > 0.5


def test_two_faces_warn_and_use_the_largest(finder):
    canvas = Image.new("L", (600, 350), 128)
    canvas.paste(Image.open(SURPRISE).resize((128, 128), Image.BICUBIC), (40, 100))
    canvas.paste(Image.open(HAPPY).resize((192, 192), Image.BICUBIC), (370, 60))
    assert len(finder.find_all(canvas)) == 2
    with pytest.warns(UserWarning, match="2 faces found; using the largest"):
        face = finder.find(canvas)
    assert face.box[0] > 300 and face.scores["mouthSmileLeft"] > 0.5  # the big happy face


def eye_angle(landmarks: np.ndarray) -> float:
    """Degrees of the line from the image-left eye to the image-right eye."""
    left, right = (landmarks[list(c), :2].mean(axis=0) for c in faces.EYE_CORNERS)
    return float(np.degrees(np.arctan2(*(right - left)[::-1])))


def test_crop_is_aligned_when_the_photo_is_rotated(finder):
    photo = Image.new("L", (400, 400), 128)
    photo.paste(Image.open(HAPPY).resize((192, 192), Image.BICUBIC), (104, 104))
    tilted = finder.find(photo.rotate(20, Image.BICUBIC, fillcolor=128), crop_size=160)
    assert abs(eye_angle(tilted.landmarks) + 20) < 4  # rotate() turns counter-clockwise
    crop = (tilted.crop * 255).astype(np.uint8)
    assert abs(eye_angle(finder.find(crop).landmarks)) < 4  # eyes level in the crop

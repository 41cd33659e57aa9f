import json

import numpy as np
import pytest
from PIL import Image

from bsviz.assets import model_path
from bsviz.fer.predict import Predictor
from bsviz.rig.obj import read_obj
from bsviz.ui.cli import main
from bsviz.vision.faces import NoFaceError

pytestmark = pytest.mark.skipif(not model_path().exists(), reason="no shipped model yet")


@pytest.fixture(scope="module")
def predictor():
    return Predictor()


@pytest.fixture(scope="module")
def happy(shared):
    return shared / "data" / "ck+48" / "happy" / "S010_006_00000013.png"


def test_shipped_model_says_happy_on_a_ck_happy_face(predictor, happy):
    prediction = predictor.predict(happy)
    assert prediction.expression == "happy"
    assert prediction.probabilities.sum() == pytest.approx(1, abs=1e-5)
    smile = [prediction.shape_names.index(n) for n in ("mouthSmile_L", "mouthSmile_R")]
    assert prediction.weights[smile].mean() > np.median(prediction.weights)


def test_flip_averages_the_crop_and_its_mirror_image(predictor, happy):
    crop = predictor.predict(happy).face.crop
    single = Predictor(flip=False)
    p, w = single.run(crop[None])
    p_flipped, w_flipped = single.run(crop[None, :, ::-1].copy())
    left, right = (predictor.shape_names.index(n) for n in ("mouthSmile_L", "mouthSmile_R"))
    mirrored = w_flipped[0].copy()
    mirrored[[left, right]] = w_flipped[0][[right, left]]  # a flipped face smiles on the other side
    probabilities, weights = predictor.run(crop[None])
    np.testing.assert_allclose(probabilities[0], (p[0] + p_flipped[0]) / 2, atol=1e-5)
    np.testing.assert_allclose(weights[0, [left, right]], ((w + mirrored) / 2)[0, [left, right]],
                               atol=1e-5)
    assert not np.allclose(w, w_flipped)  # the two views differ, so averaging does something


def test_predict_on_a_large_rgba_photo(predictor, happy):
    big = Image.open(happy).convert("RGBA").resize((400, 400), Image.BICUBIC)
    prediction = predictor.predict(big)
    assert prediction.weights.shape == (53,) and prediction.face.box[2] > 200


def test_no_face(predictor):
    with pytest.raises(NoFaceError, match="no face"):
        predictor.predict(np.full((200, 200, 3), 128, np.uint8))


def test_cli_predict_json_and_mesh(happy, tmp_path, capsys):
    assert main(["predict", str(happy), "--json", "--mesh", str(tmp_path / "face.obj")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["expression"] == "happy" and len(out["weights"]) == 53
    assert read_obj(tmp_path / "face.obj").vertices.shape == (26719, 3)
    assert main(["predict", str(happy), "--json", "--no-flip"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["expression"] == "happy" and single["weights"] != out["weights"]

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
    line, = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["path"] == str(happy) and len(record["faces"]) == 1
    face = record["faces"][0]
    assert face["expression"] == "happy" and len(face["weights"]) == 53
    assert face["found_by"] == "landmarker"
    assert set(face["pose"]) == {"yaw", "pitch", "roll"} and abs(face["pose"]["yaw"]) < 30
    fit = face["fit"]
    assert len(fit["weights"]) == 53 and all(0 <= w <= 1 for w in fit["weights"].values())
    assert len(fit["identity"]) == 10 and 0 < fit["nme"] < 0.05
    x0, y0, x1, y1 = face["box"]
    assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
    assert read_obj(tmp_path / "face.obj").vertices.shape == (26719, 3)
    assert main(["predict", str(happy), "--json", "--no-flip"]) == 0
    single = json.loads(capsys.readouterr().out)["faces"][0]
    assert single["expression"] == "happy" and single["weights"] != face["weights"]


def test_cli_predict_many_images_and_folders_one_json_line_each(happy, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(happy.read_bytes())
    (folder / "broken.png").write_bytes(happy.read_bytes()[:60])
    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "blank.png")
    assert main(["predict", str(happy), str(folder), "--json"]) == 1  # broken.png failed
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in records] == [str(happy)] + [
        str(folder / n) for n in ("a.png", "b.png", "blank.png", "broken.png")]
    assert [len(r["faces"]) for r in records[:4]] == [1, 1, 1, 0]
    assert "damaged or truncated" in records[4]["error"] and "faces" not in records[4]
    assert main(["predict", str(folder / "a.png"), str(folder / "blank.png")]) == 0
    text = capsys.readouterr().out
    assert "a.png: 1 face\n  face 1 at" in text and "blank.png: 0 faces" in text
    assert main(["predict", str(tmp_path / "missing.png"), "--json"]) == 1
    assert "no such image file" in json.loads(capsys.readouterr().out)["error"]
    assert main(["predict", str(folder), "--mesh", str(tmp_path / "x.obj")]) == 2


def group_photo(shared, sizes=(50, 70, 90, 110, 130, 150)) -> tuple[np.ndarray, list]:
    """Dataset faces (CK+ happy and surprise crops) at ``sizes`` px on a 1280x900 grey canvas,
    and where each was placed (x0, y0, x1, y1)."""
    files = sorted((shared / "data" / "ck+48" / "happy").glob("*.png"))[::20] + sorted(
        (shared / "data" / "ck+48" / "surprise").glob("*.png"))[::20]
    canvas = np.full((900, 1280, 3), 150, np.uint8)
    boxes = []
    for i, size in enumerate(sizes):
        x, y = 60 + (i % 3) * 420, 120 + (i // 3) * 400
        face = Image.open(files[i]).convert("RGB").resize((size, size), Image.BICUBIC)
        canvas[y:y + size, x:x + size] = np.asarray(face)
        boxes.append((x, y, x + size, y + size))
    return canvas, boxes


def test_every_face_of_a_group_photo_is_found_largest_first(predictor, shared):
    canvas, placed = group_photo(shared)
    predictions = predictor.predict_all(canvas)
    assert len(predictions) == len(placed)
    areas = [(p.face.box[2] - p.face.box[0]) * (p.face.box[3] - p.face.box[1])
             for p in predictions]
    assert areas == sorted(areas, reverse=True)
    for x0, y0, x1, y1 in placed:  # each placed face has a box on it
        centres = [((p.face.box[0] + p.face.box[2]) / 2, (p.face.box[1] + p.face.box[3]) / 2)
                   for p in predictions]
        assert any(x0 <= cx <= x1 and y0 <= cy <= y1 for cx, cy in centres)


def test_predict_many_is_predict_all_in_order_with_errors_in_place(predictor, shared, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    images = sorted((shared / "data" / "ck+48" / "surprise").glob("*.png"))[:5]
    inputs = images[:2] + [bad] + images[2:] + [tmp_path / "missing.jpg"]
    results = list(predictor.predict_many(inputs, ahead=2))
    assert len(results) == len(inputs)
    assert isinstance(results[2], Exception) and "broken.png" in str(results[2])
    assert isinstance(results[-1], Exception)
    for path, result in zip(inputs, results):
        if path.exists() and path != bad:
            alone = predictor.predict_all(path)
            assert [p.expression for p in result] == [p.expression for p in alone]
            np.testing.assert_allclose(result[0].probabilities, alone[0].probabilities,
                                       atol=1e-6)

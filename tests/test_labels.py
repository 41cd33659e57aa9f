"""MediaPipe -> ICT name mapping, and label_dataset: shapes, cache, resume, class means."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED  # noqa: E402
from PIL import Image

from bsviz.fer import data, labels
from bsviz.vision import faces
from bsviz.vision.scores import BLENDSHAPE_NAMES, ict_index, rig_names, to_ict

CK = SHARED / "data" / "ck+48"


@pytest.fixture
def tiny(tmp_path) -> Path:
    """tmp_path/set/{happy,surprise,angry}/ with two CK+ images each."""
    if not CK.is_dir():
        pytest.skip(f"CK+ not found under {SHARED}")
    for folder, source in (("happy", "happy"), ("surprise", "surprise"), ("angry", "anger")):
        (tmp_path / "set" / folder).mkdir(parents=True)
        for p in sorted((CK / source).glob("*.png"))[:2]:
            shutil.copy(p, tmp_path / "set" / folder / p.name)
    return tmp_path / "set"


class Calls(list):
    """Images the landmarker was called on; raises KeyboardInterrupt once ``stop_after`` long."""

    stop_after: int | None = None


@pytest.fixture
def calls(monkeypatch) -> Calls:
    """Counts landmarker calls made in this process (label_dataset with workers=1)."""
    calls = Calls()
    find_all = faces.FaceFinder.find_all

    def counting(self, image, *args, **kwargs):
        if len(calls) == calls.stop_after:
            raise KeyboardInterrupt
        calls.append(image)
        return find_all(self, image, *args, **kwargs)

    monkeypatch.setattr(faces.FaceFinder, "find_all", counting)
    return calls


def test_mapping_covers_every_ict_name_once():
    names = rig_names()
    assert len(names) == 53
    index = ict_index(names)
    mp = BLENDSHAPE_NAMES
    pairs = {ict: mp[i] for ict, i in zip(names, index)}
    assert pairs["eyeBlink_L"] == "eyeBlinkLeft" and pairs["noseSneer_R"] == "noseSneerRight"
    assert pairs["browInnerUp_L"] == pairs["browInnerUp_R"] == "browInnerUp"
    assert pairs["cheekPuff_L"] == pairs["cheekPuff_R"] == "cheekPuff"
    for movement in ("mouthLeft", "mouthRight", "jawLeft", "jawRight"):
        assert pairs[movement] == movement
    assert set(mp) - set(pairs.values()) == {"_neutral"}
    with pytest.raises(ValueError, match="tongueOut"):
        ict_index(names + ("tongueOut",))
    scores = np.random.default_rng(0).random((4, 52))
    assert to_ict(scores).shape == (4, 53)


def test_label_dataset_shapes_cache_and_table(tiny, tmp_path, calls):
    out = tmp_path / "labels.npz"
    result = labels.label_dataset(tiny, out, workers=1, progress=False)
    assert len(calls) == 6
    assert result.scores.shape == (6, 52) and result.weights.shape == (6, 53)
    assert result.detected.all() and np.isfinite(result.weights).all()
    assert sorted(set(result.classes)) == ["anger", "happy", "surprise"]
    assert all(len(h) == 40 for h in result.hashes)
    saved = labels.load_labels(out)
    assert np.array_equal(saved.weights, result.weights) and saved.names == result.names
    assert json.loads(out.with_suffix(".json").read_text())["detected"] == 6
    ds = data.load_folder(tiny)
    assert np.array_equal(saved.paths[saved.rows(ds.paths)],
                          [p.relative_to(tiny).as_posix() for p in ds.paths])

    labels.label_dataset(tiny, out, workers=1, progress=False)  # a rerun: all cached
    assert len(calls) == 6

    means = labels.class_means(saved)
    happy_top = np.argsort(-means["happy"])[:5]
    assert {"mouthSmile_L", "mouthSmile_R"} <= {saved.names[i] for i in happy_top}
    table = labels.top_table(means, saved.names)
    assert table.splitlines()[2].startswith("happy") and "mouthSmile_L" in table


def test_label_dataset_resumes_after_interruption(tiny, tmp_path, calls):
    out = tmp_path / "labels.npz"
    calls.stop_after = 4
    with pytest.raises(KeyboardInterrupt):
        labels.label_dataset(tiny, out, workers=1, progress=False, flush_every=100)
    sidecar = out.with_name("labels.partial.npz")
    assert not out.exists() and len(np.load(sidecar)["hashes"]) == 4

    calls.clear()
    calls.stop_after = None
    result = labels.label_dataset(tiny, out, workers=1, progress=False)
    assert len(calls) == 2 and result.detected.all() and not sidecar.exists()


def test_workers_match_single_process(tiny, tmp_path):
    one = labels.label_dataset(tiny, tmp_path / "one.npz", workers=1, progress=False)
    two = labels.label_dataset(tiny, tmp_path / "two.npz", workers=2, progress=False)
    assert np.array_equal(one.paths, two.paths)
    assert np.allclose(one.weights, two.weights, atol=1e-5)


def test_undetected_images_get_nan(tmp_path):
    (tmp_path / "set" / "neutral").mkdir(parents=True)
    Image.fromarray(np.full((48, 48), 128, np.uint8)).save(tmp_path / "set" / "neutral" / "a.png")
    result = labels.label_dataset(tmp_path / "set", tmp_path / "l.npz", progress=False, workers=1)
    assert not result.detected[0] and np.isnan(result.weights).all()
    assert labels.class_means(result) == {}

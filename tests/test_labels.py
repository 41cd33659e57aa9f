"""MediaPipe -> ICT name mapping, and label_dataset: shapes, cache, resume, class means."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED
from PIL import Image

from bsviz.fer import data, labels
from bsviz.rig.rig import load_rig
from bsviz.ui.cli import main
from bsviz.vision import faces
from bsviz.vision.fit import LandmarkFitter
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
    # the rig fitted to each face's landmarks: its weights, as a fit of the photo path's face
    assert result.fitted.shape == (6, 53) and np.array_equal(saved.fitted, result.fitted)
    assert ((result.fitted >= 0) & (result.fitted <= 1)).all()
    ds = data.load_folder(tiny)
    assert np.array_equal(saved.paths[saved.rows(ds.paths)],
                          [p.relative_to(tiny).as_posix() for p in ds.paths])

    before = out.stat()
    labels.label_dataset(tiny, out, workers=1, progress=False)  # a rerun: all cached
    assert len(calls) == 6
    after = out.stat()  # the label file already holds these labels: left as it is
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert json.loads(out.with_suffix(".json").read_text())["labelled_now"] == 0
    (tiny / result.paths[-1]).rename(tmp_path / "moved.png")  # one image fewer: rewritten
    fewer = labels.label_dataset(tiny, out, workers=1, progress=False)
    assert len(calls) == 6 and len(labels.load_labels(out).paths) == len(fewer.paths) == 5
    first = tiny / result.paths[0]
    with faces.FaceFinder() as finder:
        face = finder.find_all(first, crop_size=labels.CROP_SIZE)[0]
    fit = LandmarkFitter(load_rig()).fit(face.landmarks)
    np.testing.assert_allclose(result.fitted[0], fit.weights, atol=1e-5)

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
    assert np.allclose(one.fitted, two.fitted, atol=1e-4)


def test_undetected_images_get_nan(tmp_path):
    (tmp_path / "set" / "neutral").mkdir(parents=True)
    Image.fromarray(np.full((48, 48), 128, np.uint8)).save(tmp_path / "set" / "neutral" / "a.png")
    result = labels.label_dataset(tmp_path / "set", tmp_path / "l.npz", progress=False, workers=1)
    assert not result.detected[0] and np.isnan(result.weights).all()
    before = (tmp_path / "l.npz").stat().st_mtime_ns
    labels.label_dataset(tmp_path / "set", tmp_path / "l.npz", progress=False, workers=1)
    assert (tmp_path / "l.npz").stat().st_mtime_ns == before  # NaN weights compare equal
    assert np.isnan(result.fitted).all()
    assert labels.class_means(result) == {}


@pytest.fixture
def ck_copy(tmp_path) -> Path:
    """tmp_path/ck/: every 6th CK+ image (~160, all classes)."""
    if not CK.is_dir():
        pytest.skip(f"CK+ not found under {SHARED}")
    for image in sorted(CK.glob("*/*.png"))[::6]:
        (tmp_path / "ck" / image.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, tmp_path / "ck" / image.parent.name)
    return tmp_path / "ck"


def test_kill_9_keeps_the_flushed_progress_and_the_rerun_labels_the_rest(ck_copy, tmp_path,
                                                                         capsys):
    out = tmp_path / "labels.npz"
    sidecar = labels.sidecar_path(out)
    command = [sys.executable, "-m", "bsviz.ui.cli", "label", "--data-dir", str(ck_copy),
               "--out", str(out), "--workers", "1", "--quiet"]
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while not sidecar.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        run.kill()  # SIGKILL: no handler runs, only what was flushed survives
    finally:
        run.wait()
    assert sidecar.exists() and not out.exists(), log.read_text()
    kept = len(np.load(sidecar)["hashes"])
    n_images = len(list(ck_copy.rglob("*.png")))
    assert 0 < kept < n_images

    assert main(["label", "--data-dir", str(ck_copy), "--out", str(out), "--workers", "1",
                 "--quiet"]) == 0
    assert f"{n_images - kept} labelled in this run" in capsys.readouterr().out
    assert json.loads(out.with_suffix(".json").read_text())["labelled_now"] == n_images - kept
    assert not sidecar.exists()

    resumed = labels.load_labels(out)
    whole = labels.label_dataset(ck_copy, tmp_path / "whole.npz", workers=1, progress=False)
    for field in ("paths", "classes", "hashes", "detected"):
        assert np.array_equal(getattr(resumed, field), getattr(whole, field)), field
    np.testing.assert_allclose(resumed.scores, whole.scores, atol=1e-6)


def test_progress_is_saved_every_flush_seconds(tiny, tmp_path, calls, monkeypatch):
    out = tmp_path / "labels.npz"
    sidecar = labels.sidecar_path(out)
    counting = faces.FaceFinder.find_all
    saved = []

    def checking(self, image, *args, **kwargs):
        saved.append(len(np.load(sidecar)["hashes"]) if sidecar.exists() else 0)
        return counting(self, image, *args, **kwargs)

    monkeypatch.setattr(faces.FaceFinder, "find_all", checking)
    labels.label_dataset(tiny, out, workers=1, progress=False, flush_every=1000,
                         flush_seconds=0)
    assert saved == list(range(6))  # before each image, all earlier ones were on disk


def test_sigterm_interrupts_like_ctrl_c_and_the_handler_is_put_back(tiny, tmp_path, calls,
                                                                     monkeypatch):
    out = tmp_path / "labels.npz"
    counting = faces.FaceFinder.find_all

    def terminating(self, image, *args, **kwargs):
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return counting(self, image, *args, **kwargs)

    monkeypatch.setattr(faces.FaceFinder, "find_all", terminating)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        labels.label_dataset(tiny, out, workers=1, progress=False)
    assert signal.getsignal(signal.SIGTERM) is before
    assert len(np.load(labels.sidecar_path(out))["hashes"]) >= 3 and not out.exists()


@pytest.mark.parametrize("out, message", [
    ("folder.npz", "folder.npz is a folder"),
    ("labels.txt", "must end in .npz"),
    ("a_file/labels.npz", "a_file is a file, not a folder"),
])
def test_the_output_is_checked_before_any_work(tiny, tmp_path, calls, out, message):
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "a_file").write_text("")
    with pytest.raises((OSError, ValueError), match=message):
        labels.label_dataset(tiny, tmp_path / out, workers=1, progress=False)
    assert not calls


def test_unreadable_images_are_skipped_listed_and_not_fatal_again(tiny, tmp_path, calls, capsys):
    good = next(tiny.glob("happy/*.png"))
    (tiny / "happy" / "truncated.png").write_bytes(good.read_bytes()[:200])
    (tiny / "angry" / "notes.png").write_text("not an image\n")
    out = tmp_path / "labels.npz"
    argv = ["label", "--data-dir", str(tiny), "--out", str(out), "--workers", "1", "--quiet"]
    for run, labelled in ((1, 8), (2, 0)):  # the rerun tries nothing again and does not abort
        assert main(argv) == 0, run
        printed = capsys.readouterr().out
        assert f"{labelled} labelled in this run" in printed
        assert "skipped 2 unreadable files" in printed and "truncated.png" in printed
        summary = json.loads(out.with_suffix(".json").read_text())
        assert summary["unreadable"] == 2 and summary["detected"] == 6
        assert sorted(summary["unreadable_first"]) == ["angry/notes.png", "happy/truncated.png"]
        assert "damaged or truncated" in summary["unreadable_first"]["happy/truncated.png"]
    assert len(calls) == 8
    result = labels.load_labels(out)
    skipped = np.isin(result.paths, ["angry/notes.png", "happy/truncated.png"])
    assert not result.detected[skipped].any() and result.detected[~skipped].all()


def test_a_label_file_without_crops_asks_for_relabelling(tmp_path, tiny):
    out = tmp_path / "labels.npz"
    labels.label_dataset(tiny, out, workers=1, progress=False)
    with np.load(out) as z:  # as an older bsviz wrote it: no crops, no found_by
        old = {k: z[k] for k in z.files if k not in ("crops", "found_by")}
    np.savez(tmp_path / "old.npz", **old)
    with pytest.raises(data.DataError, match=r"^label file .*old.npz has no face crops .*bsviz label"):
        labels.load_labels(tmp_path / "old.npz")
    again = labels.load_labels(out)
    assert again.crops.shape == (len(again.paths), labels.CROP_SIZE, labels.CROP_SIZE)
    assert again.crops.dtype == np.uint8 and again.crops.max() > 100

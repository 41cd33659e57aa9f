"""Dataset loaders, the label vocabulary, image loading, and subject-independent folds."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED  # noqa: E402

from bsviz.fer import data
from bsviz.fer.data import DataError
from bsviz.vision.image import ImageError


@pytest.fixture(scope="module")
def ck():
    if not (SHARED / "data" / "ck+48").is_dir():
        pytest.skip(f"CK+ not found under {SHARED}")
    return data.load_ck(SHARED / "data" / "ck+48")


def tiny_dataset(root: Path, per_class: int = 2) -> Path:
    """root/{angry,happy}/ with a few CK+ images each (FER-style folder names)."""
    for folder, source in (("angry", "anger"), ("happy", "happy")):
        (root / folder).mkdir(parents=True)
        for p in sorted((SHARED / "data" / "ck+48" / source).glob("*.png"))[:per_class]:
            shutil.copy(p, root / folder / p.name)
    return root


def test_vocabulary_maps_dataset_names():
    assert data.canonical("angry") == "anger" and data.canonical("Sad") == "sadness"
    assert set(data.CK_CLASSES) | set(data.FER_CLASSES) == set(data.EXPRESSIONS)
    assert "neutral" not in data.CK_CLASSES and "contempt" not in data.FER_CLASSES
    with pytest.raises(DataError, match="unknown expression class 'smile'"):
        data.canonical("smile")


def test_load_ck(ck):
    assert len(ck) == 981 and ck.classes == data.CK_CLASSES
    assert np.bincount(ck.labels).tolist() == [135, 54, 177, 75, 207, 84, 249]
    assert len(set(ck.subjects)) == 118 and ck.subjects[0].startswith("S")
    assert data.ck_subject("S132_006_00000023.png") == "S132"
    happy = ck.canonical_labels[ck.labels == ck.classes.index("happy")]
    assert (happy == data.EXPRESSIONS.index("happy")).all()


def test_load_fer2013_splits():
    root = SHARED / "data" / "fer2013"
    if not root.is_dir():
        pytest.skip(f"FER2013 not found under {root}")
    fer = data.load_fer2013(root)
    assert fer.classes == data.FER_CLASSES and len(fer) == 35887
    splits, counts = np.unique(fer.splits, return_counts=True)
    assert dict(zip(splits, counts)) == {"train": 28709, "public_test": 3589,
                                         "private_test": 3589}
    test = data.load_fer2013(root, "private_test")
    assert len(test) == 3589 and all(p.name.startswith("PrivateTest_") for p in test.paths)
    with pytest.raises(DataError, match="unknown FER2013 split"):
        data.load_fer2013(root, "val")


def test_load_folder_and_images(ck, tmp_path):
    ds = data.load_folder(tiny_dataset(tmp_path / "set"))
    assert ds.classes == ("anger", "happy") and ds.labels.tolist() == [0, 0, 1, 1]
    images = data.load_images(ds.paths, size=32, cache_dir=tmp_path / "cache")
    assert images.shape == (4, 1, 32, 32) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0.05
    cached = list((tmp_path / "cache").glob("images-*.npy"))
    assert len(cached) == 1
    np.save(cached[0], images + 1)  # a marked cache entry proves the second call reads it
    assert data.load_images(ds.paths, size=32, cache_dir=tmp_path / "cache").min() >= 1


def test_bad_input_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found: .*nowhere"):
        data.load_folder(tmp_path / "nowhere")
    (tmp_path / "happy").mkdir()
    with pytest.raises(DataError, match=f"no images in class folder {tmp_path / 'happy'}"):
        data.load_folder(tmp_path)
    bad = tmp_path / "happy" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    ds = data.load_folder(tmp_path)
    with pytest.raises(ImageError, match="broken.png is not an image file") as err:
        data.load_images(ds.paths)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="not a CK\\+ file name"):
        data.ck_subject("face.png")


def test_subject_folds_are_leak_free_and_deterministic(ck):
    folds = data.subject_folds(ck.subjects, ck.labels, k=10, seed=0)
    test_count = np.zeros(len(ck), int)
    for fold in folds:
        parts = [set(ck.subjects[i]) for i in (fold.train, fold.val, fold.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert len(fold.train) + len(fold.val) + len(fold.test) == len(ck)
        assert 0.05 < len(fold.val) / (len(fold.train) + len(fold.val)) < 0.2
        test_count[fold.test] += 1
    assert (test_count == 1).all()  # every image in exactly one test fold
    per_fold = np.array([np.bincount(ck.labels[f.test], minlength=7) for f in folds])
    assert (np.abs(per_fold - per_fold.mean(axis=0)).max(axis=0) <= 6).all()  # balanced
    again = data.subject_folds(ck.subjects, ck.labels, k=10, seed=0)
    assert all(np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val)
               for a, b in zip(folds, again))
    other = data.subject_folds(ck.subjects, ck.labels, k=10, seed=1)
    assert any(not np.array_equal(a.test, b.test) for a, b in zip(folds, other))


def test_stratified_subset_keeps_class_shares():
    labels = np.repeat([0, 1, 2], [600, 300, 100])  # class-sorted, as dataset lists are
    indices = np.arange(100, 1000)  # classes 0, 1, 2 in 500, 300, 100 images
    subset = data.stratified_subset(indices, labels, 90)
    assert len(subset) == 90 and len(set(subset)) == 90 and np.isin(subset, indices).all()
    np.testing.assert_allclose(np.bincount(labels[subset]), [50, 30, 10], atol=1)
    assert np.array_equal(subset, np.sort(subset))
    assert np.array_equal(subset, data.stratified_subset(indices, labels, 90))  # fixed
    assert len(data.stratified_subset(indices, labels, 5000)) == 900  # n past the end: all


def test_copy_sample_keeps_layout_and_spreads_over_names(shared, tmp_path):
    src = shared / "data" / "fer2013" / "test"
    out = data.copy_sample(src, tmp_path / "fer2013" / "test", 6)
    for folder in sorted(src.iterdir()):
        copied = sorted(p.name for p in (out / folder.name).iterdir())
        assert len(copied) == 6 and set(copied) <= {p.name for p in folder.iterdir()}
        assert {name.split("_")[0] for name in copied} == {"PrivateTest", "PublicTest"}
    with pytest.raises(data.DataError, match="no images"):
        data.copy_sample(tmp_path / "empty", tmp_path / "x", 3)



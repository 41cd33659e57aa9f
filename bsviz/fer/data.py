"""Expression datasets as plain data, network input images, and subject-independent folds.

A dataset is a list of image paths with integer labels into its own ordered class
list (7 classes each for CK+ and FER2013). Class names are canonical names from
``EXPRESSIONS``; folder names are mapped onto them through ``ALIASES`` (FER2013's
``angry``/``sad`` are CK+'s ``anger``/``sadness``). CK+ has ``contempt`` and no
``neutral``, FER2013 the reverse, so cross-dataset work goes through the canonical
indices (``Dataset.canonical_labels``).

CK+ frames of one subject are near-duplicates, so CK+ is split by subject
(``subject_folds``); FER2013 comes with its own train / public_test / private_test.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bsviz.files import atomic_path
from bsviz.vision.image import read_gray

EXPRESSIONS = ("anger", "contempt", "disgust", "fear", "happy", "neutral", "sadness", "surprise")
ALIASES = {"angry": "anger", "sad": "sadness"}  # dataset folder name -> canonical name
CK_CLASSES = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
FER_CLASSES = ("anger", "disgust", "fear", "happy", "neutral", "sadness", "surprise")
FER_SPLITS = {"Training": "train", "PublicTest": "public_test", "PrivateTest": "private_test"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_CK_NAME = re.compile(r"S(\d+)_(\d+)_(\d+)")  # S<subject>_<sequence>_<frame>


class DataError(ValueError):
    """A dataset folder or image that cannot be used (missing, empty, unreadable)."""


def canonical(name: str) -> str:
    """The canonical expression name of a dataset's class name ('angry' -> 'anger')."""
    name = ALIASES.get(name.lower(), name.lower())
    if name not in EXPRESSIONS:
        raise DataError(f"unknown expression class '{name}'; known: {', '.join(EXPRESSIONS)}")
    return name


@dataclass
class Dataset:
    """Images with labels, as plain arrays.

    Attributes
    ----------
    paths : N image files
    labels : (N,) int64 index into ``classes``
    classes : the dataset's ordered class list, canonical names
    subjects : (N,) str subject ids (CK+), or None
    splits : (N,) str split names (FER2013: train / public_test / private_test), or None
    """

    paths: list[Path]
    labels: np.ndarray
    classes: tuple[str, ...]
    subjects: np.ndarray | None = None
    splits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def canonical_labels(self) -> np.ndarray:
        """(N,) int64 index into ``EXPRESSIONS``, comparable across datasets."""
        to_canonical = np.array([EXPRESSIONS.index(c) for c in self.classes])
        return to_canonical[self.labels]

    def subset(self, index: np.ndarray) -> Dataset:
        """The images at ``index`` (int indices or a boolean mask), same classes."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Dataset([self.paths[i] for i in index], self.labels[index], self.classes,
                       pick(self.subjects), pick(self.splits))


def load_folder(root: str | Path, classes: tuple[str, ...] | None = None) -> Dataset:
    """Load any ``root/<class>/*.png|jpg`` folder.

    ``classes`` fixes the class order (canonical names; folders may use aliases);
    by default it is the sorted class folders. Raises DataError, naming the path,
    for a missing folder, a missing or empty class folder, or an unknown class name.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    folders = {canonical(d.name): d for d in sorted(root.iterdir()) if d.is_dir()}
    classes = tuple(folders) if classes is None else tuple(canonical(c) for c in classes)
    if not classes:
        raise DataError(f"no class folders in {root}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        if name not in folders:
            raise DataError(f"class folder for '{name}' not found in {root}")
        files = sorted(p for p in folders[name].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"no images in class folder {folders[name]}")
        paths += files
        labels += [label] * len(files)
    return Dataset(paths, np.array(labels, dtype=np.int64), classes)


def load_ck(root: str | Path) -> Dataset:
    """CK+ (``ck+48/``): 7 classes, subject ids parsed from ``S<subject>_<seq>_<frame>.png``."""
    ds = load_folder(root, CK_CLASSES)
    ds.subjects = np.array([ck_subject(p) for p in ds.paths])
    return ds


def ck_subject(path: str | Path) -> str:
    """The CK+ subject id of a file name: 'S132_006_00000023.png' -> 'S132'."""
    match = _CK_NAME.fullmatch(Path(path).stem)
    if match is None:
        raise DataError(f"not a CK+ file name S<subject>_<seq>_<frame>: {path}")
    return f"S{match.group(1)}"


def load_fer2013(root: str | Path, split: str | None = None) -> Dataset:
    """FER2013 (``fer2013/{train,test}``): 7 classes, split named by the file prefix.

    ``split`` keeps one of 'train', 'public_test' (validation), 'private_test'
    (the reported test set); None keeps all 35,887 images.
    """
    root = Path(root)
    parts = [load_folder(root / folder, FER_CLASSES) for folder in ("train", "test")]
    ds = Dataset(parts[0].paths + parts[1].paths, np.concatenate([p.labels for p in parts]),
                 FER_CLASSES)
    ds.splits = np.array([fer_split(p) for p in ds.paths])
    if split is None:
        return ds
    if split not in FER_SPLITS.values():
        raise DataError(f"unknown FER2013 split '{split}'; known: {', '.join(FER_SPLITS.values())}")
    return ds.subset(ds.splits == split)


def fer_split(path: str | Path) -> str:
    """The FER2013 split of a file name: 'PublicTest_123.jpg' -> 'public_test'."""
    prefix = Path(path).stem.split("_")[0]
    if prefix not in FER_SPLITS:
        raise DataError(f"not a FER2013 file name {'|'.join(FER_SPLITS)}_<n>: {path}")
    return FER_SPLITS[prefix]


def copy_sample(src: str | Path, dst: str | Path, per_class: int) -> Path:
    """A small copy of an image dataset for quick runs: ``per_class`` images of every image
    folder under ``src``, evenly spread over the sorted file names (so a CK+ sample keeps many
    subjects and FER2013's test folder both of its splits), same layout under ``dst``."""
    src, dst = Path(src), Path(dst)
    folders = sorted({p.parent for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES})
    if not folders:
        raise DataError(f"no images under {src}")
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        target = dst / folder.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for i in np.unique(np.linspace(0, len(files) - 1, per_class).round().astype(int)):
            shutil.copy2(files[i], target)
    return dst


# --------------------------------------------------------------------------- images


def load_images(paths: list[Path], size: int = 48, cache_dir: str | Path | None = None
                ) -> np.ndarray:
    """(N, 1, size, size) float32 in [0, 1]: grayscale network input for ``paths``.

    With ``cache_dir`` the array is saved there as ``images-<key>.npy`` and reused;
    the key hashes the paths, their sizes and modification times, and ``size``, so
    changed files or another image size make a new cache entry.
    """
    cache = None
    if cache_dir is not None:
        key = hashlib.sha1(str(size).encode())
        for p in paths:
            st = os.stat(p)
            key.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        cache = Path(cache_dir) / f"images-{key.hexdigest()[:16]}.npy"
        if cache.exists():
            return np.load(cache)
    images = np.empty((len(paths), 1, size, size), np.float32)
    for i, p in enumerate(paths):
        images[i, 0] = read_gray(p, size)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            np.save(tmp, images)
    return images


# --------------------------------------------------------------------------- folds


@dataclass
class Fold:
    """Image indices of one cross-validation fold; no subject is in two of them."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def subject_folds(subjects: np.ndarray, labels: np.ndarray, k: int = 10, seed: int = 0,
                  val_fraction: float = 0.1) -> list[Fold]:
    """Subject-independent k-fold split with class balance as even as subjects allow.

    Every image is in exactly one test fold. Inside each fold, about ``val_fraction``
    of the training images become the validation set, taken by whole subjects (one of
    round(1 / val_fraction) balanced subject groups). Deterministic for a seed.

    subjects : (N,) subject id per image
    labels : (N,) int class per image
    """
    subjects, labels = np.asarray(subjects), np.asarray(labels)
    ids, per_image = np.unique(subjects, return_inverse=True)
    if len(ids) < k:
        raise DataError(f"{k} folds need at least {k} subjects, got {len(ids)}")
    counts = np.zeros((len(ids), labels.max() + 1), np.int64)  # (S, C) images per subject, class
    np.add.at(counts, (per_image, labels), 1)
    rng = np.random.default_rng(seed)
    fold_of = _balanced_groups(counts, k, rng)
    folds = []
    for f in range(k):
        train_ids = np.flatnonzero(fold_of != f)
        groups = _balanced_groups(counts[train_ids], max(2, round(1 / val_fraction)), rng)
        role = np.where(fold_of == f, 2, 0)  # per subject: 0 train, 1 val, 2 test
        role[train_ids[groups == 0]] = 1
        role = role[per_image]
        folds.append(Fold(*(np.flatnonzero(role == r) for r in range(3))))
    return folds


def stratified_subset(indices: np.ndarray, labels: np.ndarray, n: int, seed: int = 0
                      ) -> np.ndarray:
    """``n`` of ``indices`` (sorted), every class in its share of them to within one image:
    a fixed random pick within each class, so a subset of a class-sorted list is not one class.

    labels : (N,) int class per image, indexed by ``indices``
    """
    picked = np.random.default_rng(seed).permutation(np.asarray(indices))
    classes = np.asarray(labels)[picked]
    rank = np.empty(len(picked))  # position of each pick within its class, as a fraction
    for c in np.unique(classes):
        members = np.flatnonzero(classes == c)
        rank[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.sort(picked[np.argsort(rank, kind="stable")[:n]])


def _balanced_groups(counts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(S,) group 0..k-1 per subject, greedily: largest subjects first, each to the
    group whose class deficit (target - current counts) best matches its class mix.

    counts : (S, C) images per subject and class
    """
    target = counts.sum(axis=0) / k  # (C,) images per class each group should get
    order = rng.permutation(len(counts))  # random tie-break among equal sizes
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    current = np.zeros((k, counts.shape[1]))
    group = np.empty(len(counts), np.int64)
    for s in order:
        # Adding s to g changes the squared error to target by |c|^2 - 2 c.(target - current_g).
        need = (target - current) @ counts[s]
        best = np.flatnonzero(need == need.max())
        g = best[np.argmin(current[best].sum(axis=1))]  # ties: the emptiest group
        group[s] = g
        current[g] += counts[s]
    return group

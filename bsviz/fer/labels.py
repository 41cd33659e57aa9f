"""Dataset pseudo-labels and network inputs: for every image of a dataset folder, MediaPipe's
blendshape scores mapped onto the rig's names (``vision.scores``), the expression weights of
the rig fitted to its landmarks (``vision.fit``), and the face crop that the photo path
(``FaceFinder``, as ``bsviz predict`` and the app use it) makes of it.

``label_dataset`` runs the face finder over a dataset folder, in parallel, cached by
file content (sha1) and resumable, and writes an ``.npz`` plus a ``.json`` summary.
Images that cannot be read are skipped (no face) and listed, not fatal. Training reads its
images from the crops (``Labels.crops``), so a face scores the same in ``bsviz eval`` as
through ``bsviz predict``.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm  # a widget in notebooks, text on the command line

from bsviz.assets import landmark_vertices_path, landmarker_path
from bsviz.fer.data import ALIASES, IMAGE_SUFFIXES, DataError
from bsviz.files import atomic_path, check_writable
from bsviz.rig.rig import load_rig
from bsviz.vision import faces
from bsviz.vision.fit import LandmarkFitter
from bsviz.vision.image import ImageError, read_gray
from bsviz.vision.scores import BLENDSHAPE_NAMES, rig_names, to_ict

NO_FACE = np.full(len(BLENDSHAPE_NAMES), np.nan, np.float32)  # the scores of an image without one
SHOWN = 5  # unreadable files named in the summary
CROP_SIZE = 48  # px; the side of the stored face crops, the networks' input


@dataclass
class Result:
    """One image's labels: its (52,) MediaPipe scores (``NO_FACE`` without landmarks), its
    (CROP_SIZE, CROP_SIZE) uint8 face crop, what found the face (``Face.found_by``, '' for
    none: the crop is then the whole image), the (K,) expression weights of the rig fitted
    to its landmarks (NaN without landmarks) and why it cannot be read ('' if it can)."""

    scores: np.ndarray
    crop: np.ndarray
    found_by: str
    fitted: np.ndarray
    error: str = ""


def _no_fit() -> np.ndarray:
    return np.full(len(rig_names()), np.nan, np.float32)


def _unreadable(why: str) -> Result:
    return Result(NO_FACE, np.zeros((CROP_SIZE, CROP_SIZE), np.uint8), "", _no_fit(), why)

# --------------------------------------------------------------------------- label files


@dataclass
class Labels:
    """Per-image blendshape labels of a dataset folder.

    Attributes
    ----------
    root : the dataset folder
    paths : (N,) str image paths relative to ``root`` (posix)
    classes : (N,) str each image's class: its folder name, canonical ('angry' -> 'anger')
    hashes : (N,) str sha1 of each file's bytes ('' for a file that cannot be read)
    detected : (N,) bool the landmarker found the face (so it has scores and weights)
    scores : (N, 52) float32 MediaPipe scores (``BLENDSHAPE_NAMES``), NaN if not detected
    weights : (N, K) float32 ICT weights (``names``), NaN if not detected
    names : K ICT names
    crops : (N, S, S) uint8 the photo path's grayscale face crop of each image (eyes level,
        10 % margin; for a face without landmarks from the detector's box; for a small image
        where neither finds one, the image itself; zeros for a file that cannot be read)
    found_by : (N,) str "landmarker", "detector", "whole image", or "" (no face found)
    fitted : (N, K) float32 expression weights (``names``) of the rig fitted to the landmarks
        (``vision.fit.LandmarkFitter``), NaN if not detected; None in files made before
    """

    root: Path
    paths: np.ndarray
    classes: np.ndarray
    hashes: np.ndarray
    detected: np.ndarray
    scores: np.ndarray
    weights: np.ndarray
    names: tuple[str, ...]
    crops: np.ndarray
    found_by: np.ndarray
    fitted: np.ndarray | None = None

    def rows(self, paths: list[Path], root: str | Path | None = None) -> np.ndarray:
        """(M,) int rows of these image files (e.g. a ``data.Dataset``'s paths).

        ``root`` is where the dataset folder is now, if it has moved since labelling.
        """
        root = Path(root or self.root).resolve()
        row = {p: i for i, p in enumerate(self.paths)}
        keys = [Path(p).resolve().relative_to(root).as_posix() for p in paths]
        missing = [k for k in keys if k not in row]
        if missing:
            raise DataError(f"{len(missing)} images have no labels, e.g. {root / missing[0]}")
        return np.array([row[k] for k in keys], dtype=np.int64)

    def images(self, paths: list[Path], root: str | Path | None = None) -> np.ndarray:
        """(M, 1, S, S) float32 in [0, 1]: the networks' input for these image files, their
        stored crops (``root`` as for ``rows``)."""
        return self.inputs(self.rows(paths, root))

    def inputs(self, rows: np.ndarray) -> np.ndarray:
        """(M, 1, S, S) float32 in [0, 1]: the networks' input for these (M,) rows."""
        return self.crops[rows, None].astype(np.float32) / 255


def load_labels(path: str | Path) -> Labels:
    """Read a label file written by ``label_dataset``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "crops" not in z.files:
                raise DataError(f"label file {path} has no face crops (made by an older bsviz): "
                                f"label the dataset again with `bsviz label`")
            return Labels(Path(str(z["root"])), z["paths"], z["classes"], z["hashes"],
                          z["detected"], z["scores"], z["weights"], tuple(z["names"]),
                          z["crops"], z["found_by"],
                          z["fitted"] if "fitted" in z.files else None)
    except DataError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"cannot read label file {path}: {e}") from None


def label_dataset(data_dir: str | Path, out_path: str | Path, workers: int = 2,
                  progress: bool = True, flush_every: int = 100,
                  flush_seconds: float = 10.0) -> Labels:
    """Run the face finder on every image under ``data_dir`` and save the labels and crops.

    Writes ``out_path`` (.npz, see ``Labels``) and a summary next to it (.json),
    both atomically; ``out_path`` is checked first, before any work. Results are cached by
    file content: images whose sha1 is in an earlier ``out_path`` or in the
    ``sidecar_path(out_path)`` file are not run again, so a rerun costs only the hashing and
    an interrupted run resumes. The sidecar is rewritten (atomically) once ``flush_every`` new
    images or ``flush_seconds`` have passed, whichever comes first, and on an interruption
    (Ctrl-C, or SIGTERM, which raises KeyboardInterrupt while this runs in the main thread),
    so even kill -9 loses at most that much. Files that cannot be read or decoded count as
    without a face and are listed in the summary (``unreadable``). ``workers`` > 1 runs that
    many processes, each with its own landmarker.
    """
    root, out = Path(data_dir), Path(out_path)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    sidecar = sidecar_path(out)
    _check_output(out, sidecar)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images under {root}")
    tag = _cache_tag()
    hashed = [_hash(p) for p in files]  # (sha1, '') or ('', why the file cannot be read)
    cached, fresh = _read_cache(out, tag), _read_cache(sidecar, tag)
    todo = list({h: p for (h, _), p in zip(hashed, files)
                 if h and h not in cached and h not in fresh}.items())
    with _sigterm_interrupts(), tqdm(total=len(todo), desc=f"labelling {root}",
                                     disable=not progress) as bar:
        _label_into(fresh, todo, workers, bar.update, lambda: _write_cache(sidecar, fresh, tag),
                    flush_every, flush_seconds)
    done = cached | fresh
    results = [done[h] if h else _unreadable(why) for h, why in hashed]
    scores = np.stack([r.scores for r in results]).astype(np.float32)
    labels = Labels(root.resolve(), np.array([p.relative_to(root).as_posix() for p in files]),
                    np.array([ALIASES.get(p.parent.name.lower(), p.parent.name.lower())
                              for p in files]),
                    np.array([h for h, _ in hashed]), ~np.isnan(scores[:, 0]), scores,
                    to_ict(scores), rig_names(), np.stack([r.crop for r in results]),
                    np.array([r.found_by for r in results]),
                    np.stack([r.fitted for r in results]).astype(np.float32))
    errors = [r.error for r in results]
    if todo or fresh or not _holds(out, labels, errors):
        _save(labels, out, tag, errors)
    _save_summary(labels, out, tag, errors, len(todo))
    sidecar.unlink(missing_ok=True)
    return labels


def sidecar_path(out_path: str | Path) -> Path:
    """Where an unfinished ``label_dataset`` run keeps its results: ``<out>.partial.npz``."""
    out = Path(out_path)
    return out.with_name(out.stem + ".partial.npz")


def _check_output(out: Path, sidecar: Path) -> None:
    """Raise, before any work, unless the label file, its summary and the sidecar can be written."""
    if out.suffix != ".npz":
        raise DataError(f"label file {out} must end in .npz")
    for path in (out, out.with_suffix(".json"), sidecar):
        check_writable(path, make_folder=True)


def _hash(path: Path) -> tuple[str, str]:
    """(sha1 of the file's bytes, '') or ('', why it cannot be read)."""
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest(), ""
    except OSError as e:
        return "", f"cannot read {path.name}: {e.strerror or e}"


def _label_into(done: dict[str, Result], todo: list[tuple[str, Path]], workers: int,
                step: Callable[[], object], save: Callable[[], None], flush_every: int,
                flush_seconds: float) -> None:
    """Put the result of each (sha1, path) in ``todo`` into ``done``; call ``step()`` after each,
    ``save()`` after ``flush_every`` results or ``flush_seconds`` since the last, and when
    interrupted or failing."""
    unsaved, since = 0, time.monotonic()
    try:
        for sha1, result in _detect_all(todo, workers):
            done[sha1] = result
            step()
            unsaved += 1
            if unsaved >= flush_every or time.monotonic() - since >= flush_seconds:
                save()
                unsaved, since = 0, time.monotonic()
    except BaseException:  # interrupted or failed: keep what this run found
        save()
        raise


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM raises KeyboardInterrupt as Ctrl-C does; the old handler
    is put back after. Only the main thread may set handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)


def _detect_all(todo: list[tuple[str, Path]], workers: int) -> Iterator[tuple[str, Result]]:
    """Yield (sha1, result) for each (sha1, path), in any order."""
    if workers <= 1:
        fitter = LandmarkFitter(load_rig())
        with faces.FaceFinder() as finder:
            yield from (_detect(finder, fitter, item) for item in todo)
        return
    # spawn, not fork: a child must not inherit the parent's MediaPipe threads or landmarker.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(_worker_detect, todo, chunksize=16)


def _detect(finder: faces.FaceFinder, fitter: LandmarkFitter, item: tuple[str, Path]
            ) -> tuple[str, Result]:
    """The largest face of an image as the photo path finds it: its scores, crop and the rig
    fitted to its landmarks."""
    sha1, path = item
    try:
        found = finder.find_all(path, crop_size=CROP_SIZE)
        if not found:  # a large image without a face: the whole image, as the crop
            return sha1, Result(NO_FACE, _uint8(read_gray(path, CROP_SIZE)), "", _no_fit())
    except ImageError as e:  # damaged, truncated or not an image: skipped, not fatal
        return sha1, _unreadable(str(e))
    face = found[0]
    scores = NO_FACE if face.blendshapes is None else face.blendshapes
    fitted = (_no_fit() if face.landmarks is None
              else fitter.fit(face.landmarks).weights.astype(np.float32))
    return sha1, Result(scores, _uint8(face.crop), face.found_by, fitted)


def _uint8(crop: np.ndarray) -> np.ndarray:
    """A crop in [0, 1] as uint8, to the nearest level."""
    return np.round(crop * 255).astype(np.uint8)


_worker_finder: faces.FaceFinder | None = None
_worker_fitter: LandmarkFitter | None = None


def _init_worker() -> None:
    global _worker_finder, _worker_fitter
    import torch

    torch.set_num_threads(1)  # the workers are the parallelism; more threads only contend
    _worker_finder, _worker_fitter = faces.FaceFinder(), LandmarkFitter(load_rig())


def _worker_detect(item: tuple[str, Path]) -> tuple[str, Result]:
    return _detect(_worker_finder, _worker_fitter, item)


@cache
def _cache_tag() -> str:
    """What cached results depend on: the landmarker bundle (which holds the detector), the
    small-image preprocessing, the landmarker's window around each detected face, the
    detector's thresholds, the crop and the landmark-to-vertex map of the fit."""
    model = hashlib.sha1(landmarker_path().read_bytes()).hexdigest()[:16]
    fit = hashlib.sha1(landmark_vertices_path().read_bytes()).hexdigest()[:8]
    return (f"{model} small={faces.SMALL} upscale={faces.UPSCALE} pad={faces.PAD} "
            f"window={faces.CONTEXT}x{faces.LANDMARKER_SIDE} box_only={faces.BOX_ONLY_SCORE} "
            f"min_face={faces.MIN_FACE} crop={CROP_SIZE} fit={fit}")


def _read_cache(path: Path, tag: str) -> dict[str, Result]:
    """sha1 -> result from a label file or sidecar made with the same ``tag``, else {}."""
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["tag"]) != tag:
                return {}
            return {h: Result(s, c, f, w, e) for h, s, c, f, w, e in zip(
                z["hashes"].tolist(), z["scores"], z["crops"], z["found_by"].tolist(),
                z["fitted"], z["errors"].tolist()) if h}
    except (OSError, KeyError, ValueError):
        return {}  # an unreadable cache is recomputed, not fatal


def _write_cache(path: Path, done: dict[str, Result], tag: str) -> None:
    results = list(done.values())
    scores = np.array([r.scores for r in results], np.float32)
    crops = np.array([r.crop for r in results], np.uint8)
    with atomic_path(path) as tmp:
        np.savez(tmp, tag=tag, hashes=np.array(list(done), dtype=str),
                 scores=scores.reshape(len(done), len(BLENDSHAPE_NAMES)),
                 crops=crops.reshape(len(done), CROP_SIZE, CROP_SIZE),
                 found_by=np.array([r.found_by for r in results], dtype=str),
                 fitted=np.array([r.fitted for r in results], np.float32).reshape(
                     len(done), len(rig_names())),
                 errors=np.array([r.error for r in results], dtype=str))


def _holds(out: Path, labels: Labels, errors: list[str]) -> bool:
    """Whether the label file ``out`` already holds ``labels``, when every result came from
    it: the same images (root, paths, content hashes, in order) and what is derived from them
    at saving (classes, rig names, mapped weights, read errors); the scores, crops and fits
    are its own. A rerun with every image cached then leaves it as it is instead of rewriting
    it (FER2013's 94 MB took most of a 17 s rerun)."""
    try:
        with np.load(out, allow_pickle=False) as z:
            return (str(z["root"]) == str(labels.root) and
                    np.array_equal(z["weights"], labels.weights, equal_nan=True) and
                    all(np.array_equal(z[k], v) for k, v in (
                        ("paths", labels.paths), ("hashes", labels.hashes),
                        ("classes", labels.classes), ("names", np.array(labels.names)),
                        ("errors", np.array(errors, dtype=str)))))
    except (OSError, KeyError, ValueError):
        return False


def _save(labels: Labels, out: Path, tag: str, errors: list[str]) -> None:
    """The .npz, written atomically. ``errors``: (N,) why each image cannot be read ('' if it
    can)."""
    with atomic_path(out) as tmp:
        np.savez_compressed(tmp, tag=tag, root=str(labels.root), paths=labels.paths,
                            classes=labels.classes, hashes=labels.hashes,
                            detected=labels.detected, scores=labels.scores,
                            weights=labels.weights, names=np.array(labels.names),
                            crops=labels.crops, found_by=labels.found_by,
                            fitted=labels.fitted, score_names=np.array(BLENDSHAPE_NAMES),
                            errors=np.array(errors, dtype=str))


def _save_summary(labels: Labels, out: Path, tag: str, errors: list[str], n_new: int) -> None:
    """The .json summary beside the .npz, written atomically; ``n_new``: how many images this
    run gave the landmarker."""
    means = class_means(labels)
    unreadable = {p: e for p, e in zip(labels.paths.tolist(), errors) if e}
    summary = {
        "root": str(labels.root), "images": len(labels.paths),
        "detected": int(labels.detected.sum()),
        "detection_rate": round(float(labels.detected.mean()), 4),
        "found_by": {k or "none": int((labels.found_by == k).sum()) for k in
                     ("landmarker", "detector", "whole image", "")},
        "labelled_now": n_new,
        "unreadable": len(unreadable),
        "unreadable_first": dict(list(unreadable.items())[:SHOWN]),
        "classes": {c: {"images": int((labels.classes == c).sum()),
                        "detected": int(labels.detected[labels.classes == c].sum()),
                        "top": _top(means[c], labels.names, 5)} for c in means},
        "tag": tag,
    }
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))


# --------------------------------------------------------------------------- summaries


def class_means(labels: Labels) -> dict[str, np.ndarray]:
    """Class name -> (K,) mean ICT weights over that class's images with a face."""
    return {c: labels.weights[(labels.classes == c) & labels.detected].mean(axis=0)
            for c in np.unique(labels.classes)
            if ((labels.classes == c) & labels.detected).any()}


def _top(mean: np.ndarray, names: tuple[str, ...], k: int) -> dict[str, float]:
    return {names[i]: round(float(mean[i]), 3) for i in np.argsort(-mean)[:k]}


def top_table(means: dict[str, np.ndarray], names: tuple[str, ...], k: int = 5) -> str:
    """Plain text table: per class, its ``k`` highest mean blendshape weights."""
    rows = [f"{c:<9} " + "  ".join(f"{n} {w:.2f}" for n, w in _top(m, names, k).items())
            for c, m in means.items()]
    return "\n".join([f"{'class':<9} top {k} mean ICT weights"] + rows)

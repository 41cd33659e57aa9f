"""Dataset pseudo-labels: MediaPipe's blendshape scores for every image of a dataset folder,
mapped onto the rig's names (``vision.scores``).

``label_dataset`` runs the landmarker over a dataset folder, in parallel, cached by
file content (sha1) and resumable, and writes an ``.npz`` plus a ``.json`` summary.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bsviz.assets import landmarker_path
from bsviz.fer.data import ALIASES, IMAGE_SUFFIXES, DataError
from bsviz.files import atomic_path
from bsviz.vision import faces
from bsviz.vision.scores import BLENDSHAPE_NAMES, rig_names, to_ict

# --------------------------------------------------------------------------- label files


@dataclass
class Labels:
    """Per-image blendshape labels of a dataset folder.

    Attributes
    ----------
    root : the dataset folder
    paths : (N,) str image paths relative to ``root`` (posix)
    classes : (N,) str each image's class: its folder name, canonical ('angry' -> 'anger')
    hashes : (N,) str sha1 of each file's bytes
    detected : (N,) bool a face was found
    scores : (N, 52) float32 MediaPipe scores (``BLENDSHAPE_NAMES``), NaN if not detected
    weights : (N, K) float32 ICT weights (``names``), NaN if not detected
    names : K ICT names
    """

    root: Path
    paths: np.ndarray
    classes: np.ndarray
    hashes: np.ndarray
    detected: np.ndarray
    scores: np.ndarray
    weights: np.ndarray
    names: tuple[str, ...]

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


def load_labels(path: str | Path) -> Labels:
    """Read a label file written by ``label_dataset``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return Labels(Path(str(z["root"])), z["paths"], z["classes"], z["hashes"],
                          z["detected"], z["scores"], z["weights"], tuple(z["names"]))
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"cannot read label file {path}: {e}") from None


def label_dataset(data_dir: str | Path, out_path: str | Path, workers: int = 2,
                  progress: bool = True, flush_every: int = 1000) -> Labels:
    """Run the landmarker on every image under ``data_dir`` and save the labels.

    Writes ``out_path`` (.npz, see ``Labels``) and a summary next to it (.json),
    both atomically. Results are cached by file content: images whose sha1 is in
    an earlier ``out_path`` or in the ``<out>.partial.npz`` sidecar (flushed every
    ``flush_every`` new images, and on interruption) are not run again, so a rerun
    costs only the hashing and an interrupted run resumes. ``workers`` > 1 runs that
    many processes, each with its own landmarker.
    """
    root, out = Path(data_dir), Path(out_path)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images under {root}")
    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar = out.with_name(out.stem + ".partial.npz")
    tag = _cache_tag()
    hashes = [hashlib.sha1(p.read_bytes()).hexdigest() for p in files]
    done = _read_cache(out, tag) | _read_cache(sidecar, tag)  # sha1 -> (52,) scores or NaN
    todo = list({h: p for h, p in zip(hashes, files) if h not in done}.items())
    n_new = 0
    try:
        with tqdm(total=len(todo), desc=f"labelling {root}", disable=not progress) as bar:
            for sha1, scores in _detect_all(todo, workers):
                done[sha1] = scores
                n_new += 1
                bar.update()
                if n_new % flush_every == 0:
                    _write_cache(sidecar, done, tag)
    except BaseException:  # interrupted or failed: keep what this run found
        _write_cache(sidecar, done, tag)
        raise
    scores = np.stack([done[h] for h in hashes]).astype(np.float32)
    labels = Labels(root.resolve(), np.array([p.relative_to(root).as_posix() for p in files]),
                    np.array([ALIASES.get(p.parent.name.lower(), p.parent.name.lower())
                              for p in files]),
                    np.array(hashes), ~np.isnan(scores[:, 0]), scores, to_ict(scores),
                    rig_names())
    _save(labels, out, tag)
    sidecar.unlink(missing_ok=True)
    return labels


def _detect_all(todo: list[tuple[str, Path]], workers: int):
    """Yield (sha1, (52,) scores or NaN) for each (sha1, path), in any order."""
    if workers <= 1:
        with faces.FaceFinder() as finder:
            yield from (_detect(finder, item) for item in todo)
        return
    # spawn, not fork: a child must not inherit the parent's MediaPipe threads or landmarker.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(_worker_detect, todo, chunksize=16)


def _detect(finder: faces.FaceFinder, item: tuple[str, Path]) -> tuple[str, np.ndarray]:
    sha1, path = item
    found = finder.find_all(path)
    return sha1, found[0].blendshapes if found else np.full(len(BLENDSHAPE_NAMES), np.nan)


_worker_finder: faces.FaceFinder | None = None


def _init_worker() -> None:
    global _worker_finder
    _worker_finder = faces.FaceFinder()


def _worker_detect(item: tuple[str, Path]) -> tuple[str, np.ndarray]:
    return _detect(_worker_finder, item)


@cache
def _cache_tag() -> str:
    """What cached scores depend on: the landmarker bundle and the small-image preprocessing."""
    model = hashlib.sha1(landmarker_path().read_bytes()).hexdigest()[:16]
    return f"{model} small={faces.SMALL} upscale={faces.UPSCALE} pad={faces.PAD}"


def _read_cache(path: Path, tag: str) -> dict[str, np.ndarray]:
    """sha1 -> scores from a label file or sidecar made with the same ``tag``, else {}."""
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["tag"]) != tag:
                return {}
            return dict(zip(z["hashes"].tolist(), z["scores"]))
    except (OSError, KeyError, ValueError):
        return {}  # an unreadable cache is recomputed, not fatal


def _write_cache(path: Path, done: dict[str, np.ndarray], tag: str) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, tag=tag, hashes=np.array(list(done)),
                 scores=np.array(list(done.values()), np.float32).reshape(len(done), -1))


def _save(labels: Labels, out: Path, tag: str) -> None:
    """The .npz and its .json summary, each written atomically."""
    with atomic_path(out) as tmp:
        np.savez_compressed(tmp, tag=tag, root=str(labels.root), paths=labels.paths,
                            classes=labels.classes, hashes=labels.hashes,
                            detected=labels.detected, scores=labels.scores,
                            weights=labels.weights, names=np.array(labels.names),
                            score_names=np.array(BLENDSHAPE_NAMES))
    means = class_means(labels)
    summary = {
        "root": str(labels.root), "images": len(labels.paths),
        "detected": int(labels.detected.sum()),
        "detection_rate": round(float(labels.detected.mean()), 4),
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

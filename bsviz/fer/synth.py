"""Synthetic training faces with exact blendshape weights: the rig rendered, cropped like photos.

Each sample is the rig with sampled expression weights (around the class means of the real
pseudo-labels, or a sparse uniform prior), a random identity, a small head rotation and random
lighting, rendered at ``render_size`` px and cropped by ``faces.FaceFinder`` exactly as real
photos are (``Face.crop``, 48x48 gray). Renders where MediaPipe finds no face are dropped.

MediaPipe's scores are kept twice: on the render, and on the 48x48 crop, which is how the real
pseudo-labels were made (``labels.label_dataset`` on 48x48 dataset images). Compared with the
exact weights, the latter measures the pseudo-labels' own error.

Work is done in chunks of ``chunk`` samples, each drawn from ``default_rng([seed, chunk_index])``
and saved under ``out_dir/chunks/`` with a key of the settings in its name, so an interrupted or
repeated run only renders what is missing, and a larger ``n`` reuses the smaller run's chunks.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm  # a widget in notebooks, text on the command line

from bsviz.fer.labels import class_means, load_labels
from bsviz.files import atomic_path
from bsviz.rig.blend import blend
from bsviz.rig.colours import vertex_colours
from bsviz.rig.render import Renderer
from bsviz.rig.rig import Rig, load_rig
from bsviz.vision import faces
from bsviz.vision.scores import BLENDSHAPE_NAMES, to_ict

POSE_RANGE = (20.0, 10.0, 10.0)  # largest |yaw|, |pitch|, |roll| of the head, degrees
# ICT's own randomize_identity draws identity weights from N(0, 1): at 1 sd its largest mode
# moves vertices by 0.33 cm on average (1.3 cm at most), a plausible range of faces.
IDENTITY_SD = 1.0
SPARSE = 3.0  # expected number of extra random activations per sample
INTENSITY = (0.3, 1.7)  # range of the per-sample scale of a class mean
JITTER = 0.3  # sd of the per-shape log-normal jitter around a scaled class mean

# ICT FaceKit's Multi-PIE 68-point landmark vertices (``vertex_indices.json``): points 17-21
# and 22-26 (the brows) and 48-59 (the outer lip contour). The rig is untextured; painted
# brows and lips make renders look more like photos (MediaPipe agrees with the exact weights
# about as well either way: crop MAE 0.100 painted, 0.096 not, on 150 renders).
ICT_VERTICES = 26719
BROW_LANDMARKS = ((268, 493, 1914, 2044, 1401), (3615, 4240, 4114, 2734, 2509))
LIP_LANDMARKS = (5708, 5695, 2081, 0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841)
BROW, LIPS = (0.22, 0.16, 0.12), (0.68, 0.42, 0.41)


def sample_weights(n: int, rng: np.random.Generator,
                   means: Mapping[str, np.ndarray] | np.ndarray | None = None,
                   n_shapes: int = 53) -> np.ndarray:
    """(n, K) float32 expression weights in [0, 1] from a prior that looks like real expressions.

    With ``means`` ({class: (K,)} as ``labels.class_means`` gives, or (C, K)), each sample is a
    class mean picked at random, scaled by an intensity in ``INTENSITY``, jittered per shape
    (log-normal, so asymmetric and zero stays zero), plus on average ``SPARSE`` random shapes
    at U(0, 1); clipped to [0, 1]. With ``means=None`` only the sparse activations
    (K = ``n_shapes``).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if means is not None:
        means = np.stack(list(means.values())) if isinstance(means, Mapping) else np.asarray(means)
        if means.ndim != 2 or not np.isfinite(means).all():
            raise ValueError(f"means must be a finite (C, K) array, got shape {means.shape}")
        n_shapes = means.shape[1]
    active = rng.random((n, n_shapes)) < SPARSE / n_shapes
    w = active * rng.random((n, n_shapes))
    if means is not None:
        mean = means[rng.integers(len(means), size=n)]
        intensity = rng.uniform(*INTENSITY, size=(n, 1))
        w += mean * intensity * np.exp(JITTER * rng.standard_normal((n, n_shapes)))
    return np.clip(w, 0, 1).astype(np.float32)


@dataclass
class Scenes:
    """What to render for n samples.

    weights : (n, K) float32 expression weights in [0, 1]
    identity : (n, J) float32 identity weights
    pose : (n, 3) float32 head yaw, pitch, roll in degrees (see ``pose_matrix``)
    light : (n, 5) float32 key light yaw, pitch (degrees), intensity; fill intensity; ambient
    """

    weights: np.ndarray
    identity: np.ndarray
    pose: np.ndarray
    light: np.ndarray

    def lights(self, i: int) -> tuple[tuple[float, float, float], ...]:
        """Sample i's ``Renderer.render`` lights: the key, and a fill on the other side."""
        yaw, pitch, key, fill, _ = self.light[i].tolist()
        return (yaw, pitch, key), (-np.copysign(40.0, yaw), 0.0, fill)


def sample_scenes(n: int, rng: np.random.Generator,
                  means: Mapping[str, np.ndarray] | np.ndarray | None = None, n_shapes: int = 53,
                  n_identities: int = 10, identity_sd: float = IDENTITY_SD,
                  pose_range: Sequence[float] = POSE_RANGE) -> Scenes:
    """n random scenes: weights from ``sample_weights`` (drawn first, from the same ``rng``),
    identity ~ N(0, identity_sd^2), pose uniform in +-``pose_range``, random lighting."""
    weights = sample_weights(n, rng, means, n_shapes)
    identity = rng.normal(0, identity_sd, (n, n_identities))
    pose = rng.uniform(-1, 1, (n, 3)) * np.asarray(pose_range, np.float64)
    light = np.column_stack([rng.uniform(-60, 60, n), rng.uniform(-15, 55, n),
                             rng.uniform(1.0, 3.5, n), rng.uniform(0.2, 1.2, n),
                             rng.uniform(0.1, 0.35, n)])
    return Scenes(weights, identity.astype(np.float32), pose.astype(np.float32),
                  light.astype(np.float32))


def painted_colours(rig: Rig) -> np.ndarray:
    """(V, 3) float32 the rig's colours with brows and lips painted on (ICT FaceKit topology).

    Brows: face vertices within 0.45 cm of the brow landmark polyline moved 0.8 cm down (where
    MediaPipe reads the neutral face's brows as neutral, as it does the unpainted rig);
    lips: front face vertices inside the outer lip contour (seen from the front).
    """
    from matplotlib.path import Path as Polygon  # imported here: only painting needs it

    if rig.n_vertices != ICT_VERTICES:
        raise ValueError(f"brow and lip landmarks are for the ICT FaceKit topology "
                         f"({ICT_VERTICES} vertices), this rig has {rig.n_vertices}")
    colours = vertex_colours(rig)
    face = np.zeros(rig.n_vertices, bool)
    face[rig.triangles[rig.triangle_groups == rig.group_names.index("M_Face")].ravel()] = True
    v = rig.neutral
    for brow in BROW_LANDMARKS:
        a, b = v[list(brow[:-1])] - [0, 0.8, 0], v[list(brow[1:])] - [0, 0.8, 0]  # (4, 3)
        ab = b - a
        t = np.clip(np.einsum("vsc,sc->vs", v[:, None] - a, ab) / (ab * ab).sum(axis=1), 0, 1)
        distance = np.linalg.norm(v[:, None] - (a + t[..., None] * ab), axis=2).min(axis=1)
        colours[face & (distance < 0.45) & (v[:, 2] > 6)] = BROW
    lips = Polygon(v[list(LIP_LANDMARKS), :2]).contains_points(v[:, :2])
    colours[face & lips & (v[:, 2] > 8)] = LIPS
    return colours


def pose_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) head rotation, degrees: yaw turns the face to its left (+x), pitch tilts it up,
    roll turns it counter-clockwise as the camera sees it. R = R_y(yaw) R_x(-pitch) R_z(roll)."""
    y, p, r = np.radians([yaw, -pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


@dataclass
class SynthSet:
    """Synthetic faces that MediaPipe found on their render (N of them).

    images : (N, 1, S, S) uint8 aligned gray crops (``Face.crop``)
    weights : (N, K) float32 the exact expression weights rendered
    identity : (N, J) float32 identity weights
    pose : (N, 3) float32 yaw, pitch, roll, degrees
    light : (N, 5) float32 as in ``Scenes``
    mediapipe_weights : (N, K) float32 MediaPipe on the 48x48 crop, mapped to ICT; NaN where
        it found no face there (the way the real pseudo-labels were made)
    render_mediapipe_weights : (N, K) float32 MediaPipe on the full render, mapped to ICT
    index : (N,) int64 sample number (0..n-1) of each row; the missing ones were dropped
    names : K expression names
    """

    images: np.ndarray
    weights: np.ndarray
    identity: np.ndarray
    pose: np.ndarray
    light: np.ndarray
    mediapipe_weights: np.ndarray
    render_mediapipe_weights: np.ndarray
    index: np.ndarray
    names: tuple[str, ...]


def load_synth(path: str | Path) -> SynthSet:
    """Read the ``synth.npz`` that ``render_synthetic`` writes."""
    with np.load(path, allow_pickle=False) as z:
        return SynthSet(**{k: z[k] for k in SynthSet.__dataclass_fields__ if k != "names"},
                        names=tuple(z["names"]))


def render_synthetic(n: int, out_dir: str | Path, seed: int = 0,
                     label_files: Sequence[str | Path] = (), size: int = 48,
                     render_size: int = 256, chunk: int = 250, identity_sd: float = IDENTITY_SD,
                     pose_range: Sequence[float] = POSE_RANGE, rig: Rig | None = None,
                     paint: bool = True, progress: bool = True) -> SynthSet:
    """Render n synthetic faces into ``out_dir/synth.npz`` (+ ``synth.json``, a summary).

    label_files : pseudo-label files whose class means centre the weight prior (all classes of
        all files, each equally likely); empty for the sparse uniform prior
    size : side of the crops; render_size : side of the renders MediaPipe sees
    paint : brows and lips painted on (``painted_colours``, ICT topology only)
    Returns the ``SynthSet`` written. The same arguments give the same samples; chunks already
    in ``out_dir/chunks/`` for the same settings (and label means) are reused, not re-rendered.
    """
    if n < 1 or chunk < 1:
        raise ValueError(f"n and chunk must be positive, got n={n}, chunk={chunk}")
    rig = load_rig() if rig is None else rig
    means = (np.concatenate([np.stack(list(class_means(load_labels(f)).values()))
                             for f in label_files]) if label_files else None)
    settings = dict(seed=seed, size=size, render_size=render_size, chunk=chunk,
                    identity_sd=identity_sd, pose_range=list(map(float, pose_range)),
                    rig=Path(rig.source).name, paint=paint,
                    label_files=[Path(f).name for f in label_files])  # contents: in the key
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()
                       + (b"" if means is None else means.tobytes())).hexdigest()[:10]
    out_dir = Path(out_dir)
    (out_dir / "chunks").mkdir(parents=True, exist_ok=True)

    sizes = [min(chunk, n - start) for start in range(0, n, chunk)]
    scenes = [sample_scenes(m, np.random.default_rng([seed, c]), means, rig.n_shapes,
                            len(rig.identity_names), identity_sd, pose_range)
              for c, m in enumerate(sizes)]
    paths = [out_dir / "chunks" / f"{key}-{c:05d}-{m}.npz" for c, m in enumerate(sizes)]
    todo = [c for c, p in enumerate(paths) if not p.exists()]
    if todo:
        colours = painted_colours(rig) if paint else None
        with Renderer(rig, render_size) as renderer, faces.FaceFinder() as finder, \
                tqdm(total=n, initial=n - sum(sizes[c] for c in todo), desc="synth",
                     disable=not progress) as bar:
            for c in todo:
                _render_chunk(rig, renderer, finder, colours, scenes[c], c * chunk, size,
                              paths[c], bar)
    return _assemble(rig, scenes, paths, out_dir, settings)


def _render_chunk(rig: Rig, renderer: Renderer, finder: faces.FaceFinder,
                  colours: np.ndarray | None, scenes: Scenes, start: int, size: int, path: Path,
                  bar: tqdm) -> None:
    """Render, find and crop one chunk; save its crops and MediaPipe scores (NaN: no face)."""
    t0 = time.perf_counter()
    m = len(scenes.weights)
    images = np.zeros((m, 1, size, size), np.uint8)
    render_scores = np.full((m, len(BLENDSHAPE_NAMES)), np.nan, np.float32)
    crop_scores = render_scores.copy()
    for i in range(m):
        vertices = blend(rig, scenes.weights[i], scenes.identity[i])
        centre = renderer.target  # the head turns about the middle of its bounding box
        vertices = (vertices - centre) @ pose_matrix(*scenes.pose[i]).T + centre
        image = renderer.render(vertices, "front", colours, lights=scenes.lights(i),
                                ambient=float(scenes.light[i, 4]))
        found = finder.find_all(image, crop_size=size, landmarks_only=True)
        if found:
            images[i, 0] = np.round(found[0].crop * 255)
            render_scores[i] = found[0].blendshapes
            on_crop = finder.find_all(images[i, 0], landmarks_only=True)
            if on_crop:
                crop_scores[i] = on_crop[0].blendshapes
        bar.update()
    with atomic_path(path) as tmp:
        np.savez(tmp, index=np.arange(start, start + m), images=images,
                 render_scores=render_scores, crop_scores=crop_scores,
                 seconds=time.perf_counter() - t0)


def _assemble(rig: Rig, scenes: list[Scenes], paths: list[Path], out_dir: Path,
              settings: dict) -> SynthSet:
    """Join the chunks, drop samples without a face, write synth.npz and synth.json."""
    parts = [dict(np.load(p, allow_pickle=False)) for p in paths]
    cat = lambda key: np.concatenate([p[key] for p in parts])  # noqa: E731
    every = {f: np.concatenate([getattr(s, f) for s in scenes])
             for f in ("weights", "identity", "pose", "light")}
    kept = ~np.isnan(cat("render_scores")[:, 0])
    synth = SynthSet(images=cat("images")[kept], **{f: a[kept] for f, a in every.items()},
                     mediapipe_weights=to_ict(cat("crop_scores")[kept], rig.names),
                     render_mediapipe_weights=to_ict(cat("render_scores")[kept], rig.names),
                     index=cat("index")[kept], names=rig.names)
    with atomic_path(out_dir / "synth.npz") as tmp:
        np.savez_compressed(tmp, **{k: v for k, v in vars(synth).items() if k != "names"},
                            names=np.array(synth.names))
    seconds = sum(float(p["seconds"]) for p in parts)
    summary = dict(
        requested=len(kept), kept=int(kept.sum()), dropped=int((~kept).sum()),
        render_detection_rate=round(float(kept.mean()), 4),
        crop_detection_rate=round(float(np.isfinite(synth.mediapipe_weights[:, 0]).mean()), 4)
        if kept.any() else None,
        seconds=round(seconds, 1), renders_per_s=round(len(kept) / seconds, 2),
        mediapipe_crop=_agreement(synth.mediapipe_weights, synth.weights, synth.names),
        mediapipe_render=_agreement(synth.render_mediapipe_weights, synth.weights, synth.names),
        settings=settings)
    with atomic_path(out_dir / "synth.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return synth


def _agreement(predicted: np.ndarray, exact: np.ndarray, names: tuple[str, ...]) -> dict:
    """How well ``predicted`` (N, K) matches ``exact`` over the rows where it is finite.

    mae : mean |predicted - exact|, overall and per shape; baseline_mae : the same for a
    constant guess, each shape's mean exact weight (rare shapes have a small MAE whatever
    is predicted); r : Pearson correlation per shape (NaN where either is constant).
    """
    ok = np.isfinite(predicted).all(axis=1)
    if not ok.any():
        return {"rows": 0}
    p, e = predicted[ok].astype(np.float64), exact[ok].astype(np.float64)
    error = np.abs(p - e).mean(axis=0)
    pc, ec = p - p.mean(axis=0), e - e.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (pc * ec).sum(axis=0) / np.sqrt((pc**2).sum(axis=0) * (ec**2).sum(axis=0))
    per_shape = lambda a: {n: round(float(x), 4) for n, x in zip(names, a)}  # noqa: E731
    return {"rows": int(ok.sum()), "mae": round(float(error.mean()), 4),
            "baseline_mae": round(float(np.abs(ec).mean()), 4),
            "mae_per_shape": per_shape(error), "r_per_shape": per_shape(r)}

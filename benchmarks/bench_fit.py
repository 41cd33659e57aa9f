"""The rig fitted to landmarks (``bsviz.vision.fit``): how closely, how fast, and how right.

    python benchmarks/bench_fit.py [--data-dir ../shared/data] [--renders 200]

Prints: the fit's NME (mean and p95; mean 2D landmark error over the inter-ocular distance)
and time per face on CK+ and FER2013 PrivateTest faces; per face region, the mean absolute
difference between the fitted weights, the network's regressed weights and MediaPipe's scores
on those faces; and on synthetic renders of the rig with exact weights (random expressions
from ``fer.synth.sample_scenes``' sparse prior, head pose, identity and lighting), the weight
error of the fit, of MediaPipe's scores on the render and on its 48 px crop, and of a constant
guess, with the pose error of the fit.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bsviz.fer.predict import Predictor
from bsviz.fer.synth import painted_colours, pose_matrix, sample_scenes
from bsviz.rig.blend import blend
from bsviz.rig.render import Renderer
from bsviz.rig.rig import REGIONS, load_rig, shape_region
from bsviz.vision.scores import to_ict

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_faces(predictor: Predictor, paths: list[Path], name: str, rig) -> None:
    nmes, seconds, fitted, regressed, mediapipe = [], [], [], [], []
    for path in paths:
        found = [p for p in predictor.predict_all(path) if p.face.landmarks is not None]
        if not found:
            continue
        start = time.perf_counter()
        fit = predictor.fitter.fit(found[0].face.landmarks)
        seconds.append(time.perf_counter() - start)
        nmes.append(fit.nme)
        fitted.append(fit.weights)
        regressed.append(found[0].weights)
        mediapipe.append(found[0].mediapipe_weights)
    nmes = np.array(nmes)
    print(f"\n{name}: {len(nmes)} faces with landmarks of {len(paths)}; NME mean "
          f"{nmes.mean():.4f}, p95 {np.percentile(nmes, 95):.4f}; fit p50 "
          f"{1000 * np.median(seconds):.1f} ms, p95 {1000 * np.percentile(seconds, 95):.1f} ms")
    fitted, regressed, mediapipe = map(np.array, (fitted, regressed, mediapipe))
    print(f"  {'region':<8} {'|fit - MediaPipe|':>18} {'|ours - MediaPipe|':>19} "
          f"{'|fit - ours|':>13}")
    for region in REGIONS:
        cols = [i for i, n in enumerate(rig.names) if shape_region(n) == region]
        if cols:
            d = lambda a, b: np.abs(a[:, cols] - b[:, cols]).mean()  # noqa: E731
            print(f"  {region:<8} {d(fitted, mediapipe):>18.3f} {d(regressed, mediapipe):>19.3f}"
                  f" {d(fitted, regressed):>13.3f}")


def renders(predictor: Predictor, rig, n: int) -> None:
    finder, fitter = predictor.finder, predictor.fitter
    scenes = sample_scenes(n, np.random.default_rng(7), None, rig.n_shapes,
                           len(rig.identity_names))
    colours = painted_colours(rig)
    errors = {"fit": [], "MediaPipe on the render": [], "MediaPipe on the 48 px crop": []}
    exact, pose_error = [], []
    with Renderer(rig, 256) as renderer:
        for i in range(n):
            v = blend(rig, scenes.weights[i], scenes.identity[i])
            v = (v - renderer.target) @ pose_matrix(*scenes.pose[i]).T + renderer.target
            image = renderer.render(v, "front", colours, lights=scenes.lights(i),
                                    ambient=float(scenes.light[i, 4]))
            found = [f for f in finder.find_all(image) if f.landmarks is not None]
            crop = [f for f in finder.find_all(np.round(found[0].crop * 255).astype(np.uint8))
                    if f.landmarks is not None] if found else []
            if not crop:
                continue
            fit = fitter.fit(found[0].landmarks)
            exact.append(scenes.weights[i])
            errors["fit"].append(np.abs(fit.weights - scenes.weights[i]).mean())
            errors["MediaPipe on the render"].append(
                np.abs(to_ict(found[0].blendshapes) - scenes.weights[i]).mean())
            errors["MediaPipe on the 48 px crop"].append(
                np.abs(to_ict(crop[0].blendshapes) - scenes.weights[i]).mean())
            pose_error.append(np.abs(np.array(list(fit.pose.values())) - scenes.pose[i]))
    exact = np.array(exact)
    print(f"\nsynthetic renders: {len(exact)} of {n} with landmarks on the render and its crop;"
          f" weight MAE against the exact weights")
    for name, values in errors.items():
        print(f"  {name:<30} {np.mean(values):.4f}")
    print(f"  {'constant guess (their mean)':<30} {np.abs(exact.mean(0) - exact).mean():.4f}")
    print(f"  fit pose error (yaw, pitch, roll), mean: "
          + ", ".join(f"{e:.2f}" for e in np.mean(pose_error, axis=0)) + " degrees")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("--renders", type=int, default=200)
    args = parser.parse_args()
    rig = load_rig()
    with Predictor() as predictor:
        ck = sorted((args.data_dir / "ck+48").glob("*/*.png"))[::4]
        fer = sorted((args.data_dir / "fer2013" / "test").glob("*/PrivateTest_*.jpg"))[::10]
        real_faces(predictor, ck, "CK+ (every 4th image)", rig)
        real_faces(predictor, fer, "FER2013 PrivateTest (every 10th image)", rig)
        renders(predictor, rig, args.renders)


if __name__ == "__main__":
    main()

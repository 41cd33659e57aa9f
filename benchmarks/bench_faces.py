"""Face finding as users meet it: which faces are found, how fast, and through `bsviz predict`.

    python benchmarks/bench_faces.py [--data-dir ../shared/data] [--every 1] [--candidates]
                                     [--skip-datasets] [--only composites timing ...]

Prints: the share of images with a face found on CK+ and on each FER2013 split, by what found
it (the landmarker, then the detector, then the whole small image taken as the crop it is);
the share of faces found on composites (dataset faces at 40, 60, 90 and 150 px pasted on
1920x1080 and 1280x900 photos of a smooth random background), of all the faces placed and of
those found when pasted alone at 150 px (some dataset crops are no face to any detector: a hand
over it, a line drawing, a posterised profile); detection time (p50 / p95) on
640x480 and 1920x1080 images (BlazeFace in OpenCV's TFLite runtime); and `bsviz predict DIR`
images per second on a folder of 400 FER2013 crops, start-up included. ``--candidates`` also
measures the detectors considered: MediaPipe's landmarker on the whole image (its own
short-range detector, what bsviz used before) and OpenCV's Haar cascade (``cv2.data``), on
the same composites.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from bsviz.fer.data import load_ck, load_fer2013
from bsviz.vision.faces import FaceFinder

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = (40, 60, 90, 150)
PARTS = ["composites", "timing", "datasets", "predict"]


def background(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth random photo background, (height, width, 3) uint8."""
    noise = np.random.default_rng(seed).integers(70, 190, (height // 16, width // 16, 3))
    canvas = cv2.resize(noise.astype(np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(canvas, (0, 0), 4)


def paste(canvas: np.ndarray, path: Path, x0: int, y0: int, size: int) -> tuple:
    """The dataset face at ``path`` pasted at (x0, y0), ``size`` px square; its box."""
    face = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    canvas[y0:y0 + size, x0:x0 + size] = np.asarray(face)
    return x0, y0, x0 + size, y0 + size


def composite(paths: list[Path], size: int, width: int, height: int, seed: int
              ) -> tuple[np.ndarray, list[tuple[int, int, int, int]], list[Path]]:
    """Dataset faces of ``size`` px in a grid with random jitter on a smooth random background
    of width x height, their boxes and the images they came from."""
    rng = random.Random(seed)
    canvas = background(width, height, seed)
    boxes, sources, step = [], [], int(size * 2.6)
    for y in range(10, height - size - 10, step):
        for x in range(10, width - size - 10, step):
            dx, dy = rng.randint(0, step - size), rng.randint(0, step - size)
            sources.append(rng.choice(paths))
            boxes.append(paste(canvas, sources[-1], min(x + dx, width - size),
                               min(y + dy, height - size), size))
    return canvas, boxes, sources


def found_alone(finder: FaceFinder, path: Path, size: int = 150) -> bool:
    """Whether the face at ``path``, pasted alone at ``size`` px on a 640x480 background, is
    found: the faces a detector can find at all, whatever their size."""
    canvas = background(640, 480, seed=1)
    box = paste(canvas, path, 200, 100, size)
    return found([box], [f.box for f in finder.find_all(canvas)]) == 1


def found(placed: list[tuple], boxes: list[np.ndarray]) -> int:
    """How many placed faces have a found box whose centre lies inside them."""
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes]
    return sum(any(x0 <= cx <= x1 and y0 <= cy <= y1 for cx, cy in centres)
               for x0, y0, x1, y1 in placed)


def datasets(finder: FaceFinder, data: Path, every: int) -> None:
    ck, fer = load_ck(data / "ck+48"), load_fer2013(data / "fer2013")
    parts = [("CK+", ck.paths)] + [(f"FER2013 {s}", [p for p, t in zip(fer.paths, fer.splits)
                                                      if t == s])
                                   for s in ("train", "public_test", "private_test")]
    print(f"\nimages with a face, by what found it (every {every}th image)\n"
          f"{'dataset':<22} {'images':>7} {'landmarker':>11} {'+ detector':>11} "
          f"{'+ whole crop':>13} {'ms/image':>9}")
    for name, paths in parts:
        paths = paths[::every]
        start, counts = time.perf_counter(), {"landmarker": 0, "detector": 0, "whole image": 0}
        for path in paths:
            faces = finder.find_all(path)
            if faces:
                counts[faces[0].found_by] += 1
        ms = 1000 * (time.perf_counter() - start) / len(paths)
        share = np.cumsum(list(counts.values())) / len(paths)
        print(f"{name:<22} {len(paths):>7} {share[0]:>10.2%} {share[1]:>10.2%} "
              f"{share[2]:>12.2%} {ms:>9.1f}")


def composites(finder: FaceFinder, pool: list[Path], candidates: bool) -> None:
    methods = {"bsviz (pyramid + landmarker)": lambda rgb: [f.box for f in finder.find_all(rgb)]}
    if candidates:
        haar = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml")
        methods["landmarker on the whole image"] = lambda rgb: [
            np.r_[p[:, :2].min(0), p[:, :2].max(0)] for p, _ in finder._landmark(rgb)]
        methods["OpenCV Haar (frontalface_alt2)"] = lambda rgb: [
            np.r_[x, y, x + w, y + h] for x, y, w, h in haar.detectMultiScale(
                cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 1.1, 3, minSize=(32, 32))]
    findable: dict[Path, bool] = {}
    print("\nfaces found on composites (found / placed; found / those found alone at 150 px; "
          "time per image)")
    for (width, height) in ((1280, 900), (1920, 1080)):
        for size in SIZES:
            canvas, placed, sources = composite(pool, size, width, height, seed=size)
            for path in sources:
                if path not in findable:
                    findable[path] = found_alone(finder, path)
            alone = [box for box, path in zip(placed, sources) if findable[path]]
            for name, method in methods.items():
                start = time.perf_counter()
                boxes = method(canvas)
                ms = 1000 * (time.perf_counter() - start)
                hit, hit_alone = found(placed, boxes), found(alone, boxes)
                print(f"  {width}x{height} {size:>3} px  {name:<31} {hit:>3} / {len(placed):<3} "
                      f"({hit / len(placed):6.1%}); {hit_alone:>3} / {len(alone):<3} "
                      f"({hit_alone / len(alone):6.1%}); {len(boxes) - hit:>2} other boxes, "
                      f"{ms:6.0f} ms")


def detection_time(finder: FaceFinder, pool: list[Path], repeats: int = 15) -> None:
    print("\ndetection (BlazeFace pyramid) time, p50 / p95")
    for width, height in ((640, 480), (1920, 1080)):
        canvas, _, _ = composite(pool, 90, width, height, seed=1)
        finder.detector.detect(canvas)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            finder.detector.detect(canvas)
            times.append(1000 * (time.perf_counter() - start))
        whole = []
        for _ in range(3):
            start = time.perf_counter()
            faces = finder.find_all(canvas)
            whole.append(1000 * (time.perf_counter() - start))
        print(f"  {width}x{height}: detection {np.percentile(times, 50):.0f} / "
              f"{np.percentile(times, 95):.0f} ms; all of find_all ({len(faces)} faces, "
              f"landmarks on each) {np.median(whole):.0f} ms")


def predict_folder(pool: list[Path], n: int = 400) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for path in pool[:n]:
            shutil.copy(path, folder)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "bsviz.ui.cli", "predict", folder,
                                 "--json"], capture_output=True, text=True)
        seconds = time.perf_counter() - start
    lines = result.stdout.splitlines()
    print(f"\n`bsviz predict DIR --json` on {n} FER2013 crops: {len(lines)} JSON lines, exit "
          f"{result.returncode}, {seconds:.1f} s with start-up: {n / seconds:.1f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("--every", type=int, default=1, help="use every n-th dataset image")
    parser.add_argument("--candidates", action="store_true",
                        help="also measure the detectors considered")
    parser.add_argument("--skip-datasets", action="store_true")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=PARTS,
                        help="run only these parts (composites and datasets count faces, timing and "
                             "predict time them; a loaded machine skews only the last two)")
    args = parser.parse_args()
    parts = set(args.only) - ({"datasets"} if args.skip_datasets else set())
    print(f"OpenCV threads {cv2.getNumThreads()}")
    fer = sorted((args.data_dir / "fer2013" / "test").glob("*/PrivateTest_*.jpg"))
    ck = sorted((args.data_dir / "ck+48").glob("*/*.png"))
    with FaceFinder(max_faces=256) as finder:  # composites hold up to 180 faces
        if "composites" in parts:
            composites(finder, ck + fer, args.candidates)
        if "timing" in parts:
            detection_time(finder, ck + fer)
        if "datasets" in parts:
            datasets(finder, args.data_dir, args.every)
    if "predict" in parts:
        predict_folder(fer[::3])


if __name__ == "__main__":
    main()

"""One framing: a model's FER2013 PrivateTest accuracy through `bsviz eval`'s path (the label
file's crops) and through `bsviz predict --json` on the image files (the photo path).

    python benchmarks/bench_paths.py --labels runs/labels/fer2013.npz [--model CKPT]
        [--data-dir ../shared/data] [--every 1]

The eval path classifies the crops stored by `bsviz label` with test-time flip, as
`Predictor` does; the photo path runs `bsviz predict --json` in a subprocess over the same
images (the largest face's expression; an image without a face counts as wrong). Prints both
accuracies, the share of images where the two paths agree, and the images per second of the
photo path.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bsviz.fer.data import load_fer2013
from bsviz.fer.labels import load_labels
from bsviz.fer.predict import Predictor

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", required=True, help="FER2013 label file (bsviz label)")
    parser.add_argument("--model", help="checkpoint (default: the shipped model)")
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("--every", type=int, default=1, help="use every n-th PrivateTest image")
    args = parser.parse_args()
    root = args.data_dir / "fer2013"
    test = load_fer2013(root, "private_test")
    index = np.arange(0, len(test), args.every)
    paths = [test.paths[i] for i in index]
    truth = test.labels[index]
    labels = load_labels(args.labels)
    crops = labels.images(paths, root)[:, 0]

    predictor = Predictor(args.model, fit=False)
    names = list(predictor.classes)
    probabilities = np.concatenate([predictor.run(crops[i:i + 256])[0]
                                    for i in range(0, len(crops), 256)])
    eval_path = np.array([test.classes.index(names[k]) for k in probabilities.argmax(1)])

    command = [sys.executable, "-m", "bsviz.ui.cli", "predict", *map(str, paths), "--json"]
    if args.model:
        command += ["--model", args.model]
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=False)  # exit 1: some failed
    seconds = time.perf_counter() - start
    by_path = {}
    for line in out.stdout.splitlines():
        record = json.loads(line)
        faces = record.get("faces") or []
        by_path[record["path"]] = test.classes.index(faces[0]["expression"]) if faces else -1
    photo_path = np.array([by_path.get(str(p), -1) for p in paths])
    print(f"FER2013 PrivateTest, {len(paths)} images, model {predictor.path}")
    print(f"  eval path (the label file's crops, test-time flip): "
          f"{(eval_path == truth).mean():.2%}")
    print(f"  photo path (`bsviz predict --json` on the files; no face = wrong): "
          f"{(photo_path == truth).mean():.2%}, {(photo_path < 0).sum()} images without a face,"
          f" {len(paths) / seconds:.1f} images/s with start-up")
    print(f"  the two paths agree on {(photo_path == eval_path).mean():.2%} of the images")


if __name__ == "__main__":
    main()

"""Face detection rate and labelling speed on CK+ and FER2013; writes the label files.

    nice -n 10 python benchmarks/bench_labels.py --fresh            # all images, ~6 min, 1 core
    python benchmarks/bench_labels.py --only ck+48 --workers 2 --out-dir /tmp/l --fresh

Writes ``<out-dir>/ck+48.npz`` and ``<out-dir>/fer2013.npz`` (+ .json summaries) and
prints, per dataset: detection rate (FER2013 also per split), images/s, and the top-5
mean ICT weights per class. ``--raw-every N`` also compares, on every N-th FER2013 image,
detection with and without the small-image upscaling.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bsviz.fer.data import fer_split
from bsviz.fer.labels import Labels, class_means, label_dataset, top_table
from bsviz.vision import faces

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("ck+48", "fer2013")


def label(data_dir: Path, out: Path, workers: int, fresh: bool) -> Labels:
    """label_dataset with timing; ``fresh`` drops earlier results so all images are run."""
    if fresh:
        for stale in (out, out.with_suffix(".json"), out.with_name(out.stem + ".partial.npz")):
            stale.unlink(missing_ok=True)
    start = time.perf_counter()
    labels = label_dataset(data_dir, out, workers=workers)
    seconds = time.perf_counter() - start
    print(f"{data_dir.name}: {len(labels.paths)} images in {seconds:.1f} s "
          f"({len(labels.paths) / seconds:.0f} images/s, workers={workers}"
          f"{'' if fresh else ', cached results reused'})")
    return labels


def print_rates(labels: Labels, groups: np.ndarray) -> None:
    """Detection rate overall and per group (e.g. split)."""
    print(f"  detected {labels.detected.sum()}/{len(labels.detected)} "
          f"= {labels.detected.mean():.2%}")
    for g in np.unique(groups):
        hit = labels.detected[groups == g]
        print(f"  {g:<13} {hit.sum():>6}/{len(hit):<6} = {hit.mean():.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out-dir", type=Path, default=REPO / "runs" / "labels")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--only", choices=DATASETS)
    parser.add_argument("--fresh", action="store_true", help="ignore earlier results (timing)")
    parser.add_argument("--raw-every", type=int, default=0,
                        help="also label every N-th FER2013 image without upscaling")
    args = parser.parse_args()

    for name in [args.only] if args.only else DATASETS:
        labels = label(args.data_root / name, args.out_dir / f"{name}.npz", args.workers,
                       args.fresh)
        if name == "fer2013":
            print_rates(labels, np.array([fer_split(p) for p in labels.paths]))
        else:
            print_rates(labels, labels.classes)
        print(top_table(class_means(labels), labels.names), "\n")

    if args.raw_every:
        compare_upscaling(args.data_root / "fer2013", args.raw_every)


def compare_upscaling(fer: Path, every: int) -> None:
    """Detection rate on every N-th FER2013 image, with and without small-image upscaling."""
    paths = sorted(fer.rglob("*.jpg"))[::every]
    splits = np.array([fer_split(p) for p in paths])
    default = faces.SMALL
    with faces.FaceFinder() as finder:
        for small, what in ((0, "raw 48 px"), (default, f"upscaled to {faces.UPSCALE} px")):
            faces.SMALL = small  # a short side below SMALL is upscaled; 0 turns that off
            found = np.array([bool(finder.find_all(p)) for p in paths])
            print(f"FER2013 every {every}th image, {what}: {found.mean():.2%} of {len(paths)}, "
                  + ", ".join(f"{s} {found[splits == s].mean():.2%}" for s in np.unique(splits)))
    faces.SMALL = default

if __name__ == "__main__":
    main()

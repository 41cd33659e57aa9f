"""Time to accuracy: training recipes for the image stream on FER2013, CPU-minutes against
PrivateTest accuracy (PublicTest picks the checkpoint).

    python benchmarks/bench_recipes.py --labels runs/labels/fer2013.npz [--data-dir ../shared/data]
        [--recipes baseline,wide,...] [--results results/recipes.json] [--table]

Each recipe is a set of ``TrainConfig`` changes from the defaults (``RECIPES``). A recipe's
run goes to ``runs/recipes/<name>`` (resumable: run the same command again after an
interruption) and, once finished, its summary into ``--results``, which is committed: a
recipe whose summary is there is not trained again, so the study goes on from a fresh clone.
``--table`` prints the Markdown table of the summaries (the README's) and trains nothing.

CPU-minutes are this process's CPU time (user + system, all threads) over training and
validation; wall minutes are measured too. Both depend on what else the machine runs: the
load average during each run is recorded with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bsviz.fer.config import TrainConfig
from bsviz.fer.train import train
from bsviz.files import atomic_path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# the defaults until the study chose early-pool: pooling after convolutions 1, 3, 5, 7
BEFORE = {"pool_after": (0, 2, 4, 6)}
SGD_EMA = {**BEFORE, "optimizer": "sgd", "lr": 0.05, "erasing": 0.25, "ema": 0.999}
# name -> (what it is, TrainConfig changes from the defaults)
RECIPES: dict[str, tuple[str, dict]] = {
    "baseline": (("AdamW 2e-3, warm-up + cosine, label smoothing 0.1, flips and affine jitter, "
                  "pooling after convolutions 1, 3, 5, 7"), {**BEFORE, "epochs": 10}),
    "sgd-ema": ("SGD-Nesterov 0.05, random erasing 0.25, EMA 0.999 of the weights",
                {**SGD_EMA, "epochs": 10}),
    "early-pool": (("the baseline with pooling after convolutions 1, 2, 4, 6 (half the "
                    "FLOPs; the defaults since)"), {"pool_after": (0, 1, 3, 5), "epochs": 20}),
    "adamw-ema": ("the baseline with an EMA 0.998 of the weights",
                  {**BEFORE, "ema": 0.998, "epochs": 10}),
    "sgd-ema-mixup": ("sgd-ema with mixup 0.2", {**SGD_EMA, "mixup": 0.2, "epochs": 10}),
    "wide": ("the baseline with twice the widths (64-512) and 512 features",
             {**BEFORE, "widths": (64, 64, 128, 128, 256, 256, 512), "feature_dim": 512,
              "epochs": 10}),
}


def summary(name: str, cfg: TrainConfig, result: dict, load: list[float]) -> dict:
    """What the table needs from a finished run, and the config that made it."""
    history = result["history"]
    return {"recipe": name, "about": RECIPES[name][0], "changes": RECIPES[name][1],
            "epochs": cfg.epochs, "best_epoch": result["best_epoch"],
            "cpu_minutes": sum(r["cpu_seconds"] for r in history) / 60,
            "wall_minutes": sum(r["seconds"] for r in history) / 60,
            "images_per_s": sum(r["images_per_s"] for r in history) / len(history),
            "public_test": result["val_accuracy"], "private_test": result["test_accuracy"],
            "private_test_flip": result["test_accuracy_flip"],
            "val_curve": [[round(sum(r["cpu_seconds"] for r in history[:i + 1]) / 60, 2),
                           r["val_accuracy"]] for i, r in enumerate(history)],
            "load_average": [round(v, 2) for v in load],
            "config": asdict(cfg),
            "command": "python benchmarks/bench_recipes.py " + " ".join(sys.argv[1:])}


def table(summaries: list[dict]) -> str:
    rows = ["| recipe | epochs | CPU-min | wall min | PublicTest | PrivateTest | + flip |",
            "|---|---|---|---|---|---|---|"]
    for s in sorted(summaries, key=lambda s: s["cpu_minutes"]):
        rows.append(f"| {s['recipe']}: {s['about']} | {s['epochs']} | {s['cpu_minutes']:.0f} | "
                    f"{s['wall_minutes']:.0f} | {s['public_test']:.2%} | "
                    f"{s['private_test']:.2%} | {s['private_test_flip']:.2%} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("--labels", help="FER2013 label file (bsviz label): crops and weights")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--results", type=Path, default=Path("results/recipes.json"))
    parser.add_argument("--out-dir", type=Path, default=Path("runs/recipes"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="print the table; train nothing")
    args = parser.parse_args()
    done = json.loads(args.results.read_text()) if args.results.exists() else {}
    if args.table:
        print(table(list(done.values())))
        return
    if not args.labels:
        parser.error("--labels is required to train")
    for name in args.recipes.split(","):
        if name not in RECIPES:
            parser.error(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
        cfg = TrainConfig(kind="image", dataset="fer2013", data_dir=str(args.data_dir),
                          labels=args.labels, out_dir=str(args.out_dir / name), seed=args.seed,
                          resume=True, progress=False, **RECIPES[name][1])
        key = f"{name} seed{args.seed}"
        if key in done:
            print(f"{key}: summary in {args.results}, not trained again")
            continue
        print(f"{key}: training ({RECIPES[name][0]}), load average {os.getloadavg()[0]:.2f}",
              flush=True)
        started, before = time.time(), os.getloadavg()
        result = train(cfg)
        load = [before[0], os.getloadavg()[0]]
        done[key] = summary(name, cfg, result, load)
        print(f"{key}: PrivateTest {result['test_accuracy']:.2%} (flip "
              f"{result['test_accuracy_flip']:.2%}), PublicTest {result['val_accuracy']:.2%}, "
              f"{done[key]['cpu_minutes']:.0f} CPU-min, {(time.time() - started) / 60:.0f} "
              "wall min", flush=True)
        with atomic_path(args.results) as tmp:
            tmp.write_text(json.dumps(done, indent=1))
    print(table(list(done.values())))


if __name__ == "__main__":
    main()

"""Experiments over many training runs (CK+ folds, FER2013 seeds), their summaries and plots."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from bsviz.files import atomic_path
from bsviz.train import TrainConfig, train


def repeat_runs(cfg: TrainConfig, name: str, folds: list[int] | None = None,
                seeds: list[int] | None = None) -> dict:
    """Train ``cfg`` once per CK+ fold (``folds``) or per seed (``seeds``) and summarise.

    Each run goes to ``<out_dir>/<name>/fold<k>`` or ``seed<s>``; a run that already has
    its ``result.json`` is read, not repeated, so an interrupted experiment resumes.
    Returns (and writes as ``<out_dir>/<name>/summary.json``) per-run test accuracy and
    weight MAE, their mean and standard deviation, and the summed confusion matrix.
    """
    base = Path(cfg.out_dir) / name
    variants = ([("fold", f, replace(cfg, fold=f)) for f in folds] if folds is not None
                else [("seed", s, replace(cfg, seed=s)) for s in seeds or [cfg.seed]])
    runs = []
    for label, value, run_cfg in variants:
        run_dir = base / f"{label}{value}"
        run_cfg = replace(run_cfg, out_dir=str(run_dir), resume=True)
        done = run_dir / "result.json"
        result = json.loads(done.read_text()) if done.exists() else train(run_cfg)
        runs.append({label: value, "test_accuracy": result.get("test_accuracy"),
                     "test_mae": result.get("test_mae"), "confusion": result.get("confusion"),
                     "n_test": result.get("n_test"), "best_epoch": result.get("best_epoch")})
    summary = {"name": name, "kind": cfg.kind, "dataset": cfg.dataset, "runs": runs,
               **_mean_std(runs, "test_accuracy"), **_mean_std(runs, "test_mae")}
    confusions = [np.array(r["confusion"]) for r in runs if r["confusion"] is not None]
    if confusions:
        summary["confusion"] = np.sum(confusions, axis=0).tolist()
        summary["classes"] = json.loads((base / f"{variants[0][0]}{variants[0][1]}" /
                                         "result.json").read_text())["classes"]
    with atomic_path(base / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


def _mean_std(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs if r[key] is not None]
    if not values:
        return {}
    return {f"{key}_mean": float(np.mean(values)), f"{key}_std": float(np.std(values)),
            f"{key}_n": len(values)}


def plot_run(out_dir: str | Path, history: list[dict], confusion: list[list[int]] | None,
             classes: list[str]) -> None:
    """``curves.png`` (losses and validation score per epoch) and ``confusion.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    for key, label in (("val_accuracy", "validation accuracy"), ("val_mae", "validation MAE")):
        if history and history[0][key] is not None:
            ax_score.plot(epochs, [h[key] for h in history], label=label)
    ax_score.set(xlabel="epoch", title="validation")
    ax_score.legend()
    fig.tight_layout()
    with atomic_path(out_dir / "curves.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    if confusion is not None:
        plot_confusion(out_dir / "confusion.png", np.array(confusion), classes)


def plot_confusion(path: str | Path, confusion: np.ndarray, classes: list[str]) -> None:
    """A row-normalised confusion matrix (rows: true class) with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted",
           ylabel="true", title=f"accuracy {np.trace(confusion) / confusion.sum():.3f}")
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for i, j in np.ndindex(confusion.shape):
        ax.text(j, i, f"{rates[i, j]:.2f}\n({confusion[i, j]})", ha="center", va="center",
                fontsize=7, color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)

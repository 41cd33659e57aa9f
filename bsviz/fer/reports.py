"""Reports: figures of runs (curves, confusion matrices), summaries and the results table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bsviz.files import atomic_path


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int counts: row = true class, column = predicted class."""
    return np.bincount(truth * n_classes + predicted, minlength=n_classes**2).reshape(
        n_classes, n_classes)


def format_summary(summary: dict) -> str:
    """A few lines: each network's test accuracy (with the mean validation accuracy that chose
    its checkpoints) / MAE as mean +- std, and the ablation; then the same with test-time flip."""
    lines = [f"{summary['dataset']}:"]
    for suffix, note in (("", ""), ("_flip", " (test-time flip)")):
        for kind, model in summary["models"].items():
            parts = []
            if f"test_accuracy{suffix}_mean" in model:
                parts.append(f"accuracy {_percent(model, 'test_accuracy' + suffix, ' +- ')}")
                if not suffix and "val_accuracy_mean" in model:
                    parts.append(f"validation {100 * model['val_accuracy_mean']:.2f} %")
            if f"test_mae{suffix}_mean" in model:
                parts.append(f"weight MAE {model[f'test_mae{suffix}_mean']:.4f} +- "
                             f"{model[f'test_mae{suffix}_std']:.4f}")
            if parts:
                lines.append(f"  {kind + note:<28} " + "; ".join(parts))
        gain = summary.get("two_stream_minus_image" + suffix)
        if gain:
            lines.append(f"  {'two-stream - image' + note:<28} {_points(gain, ' +- ')}")
    return "\n".join(lines)


def _percent(values: dict, name: str, pm: str = " ± ") -> str:
    """'65.30 ± 0.65 % (n=2)' from the ``name``_mean / _std / _n entries of a summary."""
    return (f"{100 * values[name + '_mean']:.2f}{pm}{100 * values[name + '_std']:.2f} % "
            f"(n={values[name + '_n']})")


def _points(gain: dict, pm: str = " ± ") -> str:
    """'+0.75 ± 0.39 points (n=2)' from a paired difference in a summary."""
    return (f"{100 * gain['difference_mean']:+.2f}{pm}{100 * gain['difference_std']:.2f} points "
            f"(n={gain['difference_n']})")


REFERENCES = {
    "fer2013": "73.28 % single model, PrivateTest (VGG variant, Khaireddin & Chen 2021); "
               "58.4 % the `fer` package's shipped model on this test folder",
    "ck+": "96.8 % (8 classes) / 98.6 % (6 classes), FaceNet2ExpNet, subject-independent 10-fold",
}


def results_table(summaries: list[dict], reference: dict | None = None) -> str:
    """A markdown table of experiment summaries (``fer2013_experiment``, ``ck_experiment``)
    and the blendshape-only reference, next to published figures."""
    rows = ["| data, protocol | network | accuracy (mean ± std, n) | weight MAE | published |",
            "| --- | --- | ---: | ---: | --- |"]
    for summary in summaries:
        protocol = ("FER2013 PrivateTest, per seed" if summary["dataset"] == "fer2013"
                    else "CK+ subject-independent 10-fold, per fold")
        for suffix, note in (("", ""), ("_flip", ", test-time flip")):
            for kind, model in summary["models"].items():
                acc = (_percent(model, "test_accuracy" + suffix)
                       if f"test_accuracy{suffix}_mean" in model else "-")
                mae = (f"{model[f'test_mae{suffix}_mean']:.4f}"
                       if f"test_mae{suffix}_mean" in model else "-")
                published = REFERENCES[summary["dataset"]] if kind == "image" and not suffix else ""
                if acc != "-" or mae != "-":
                    rows.append(f"| {protocol} | {kind}{note} | {acc} | {mae} | {published} |")
            gain = summary.get("two_stream_minus_image" + suffix)
            if gain:
                rows.append(f"| {protocol} | two-stream − image{note} | {_points(gain)} | | "
                            "paper: about +0.5 points |")
    for name, value in (reference or {}).items():
        if not isinstance(value, dict):  # e.g. the "command" that made it
            continue
        acc = (_percent(value, "accuracy") if "accuracy_mean" in value
               else f"{100 * value['accuracy']:.2f} %")
        dataset, feature = name.split(" ", 1)
        rows.append(f"| {dataset} | logistic regression on {feature} blendshapes | {acc} | | |")
    return "\n".join(rows)


def curves_figure(history: list[dict], title: str = "") -> Figure:
    """Losses (train, validation) and the validation score per epoch of a run's history."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_score = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{title} loss".strip())
    ax_loss.legend()
    for key, label in (("val_accuracy", "validation accuracy"), ("val_mae", "validation MAE")):
        if history and history[0][key] is not None:
            ax_score.plot(epochs, [h[key] for h in history], "o-", label=label)
    ax_score.set(xlabel="epoch", title=f"{title} validation".strip())
    ax_score.legend()
    for ax in (ax_loss, ax_score):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def confusion_figure(confusion: np.ndarray, classes: list[str]) -> Figure:
    """A row-normalised confusion matrix (rows: true class), each cell with its count."""
    confusion = np.asarray(confusion)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted",
           ylabel="true", title=f"accuracy {np.trace(confusion) / confusion.sum():.3f}")
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for i, j in np.ndindex(confusion.shape):
        ax.text(j, i, f"{rates[i, j]:.2f}\n({confusion[i, j]})", ha="center", va="center",
                fontsize=7, color="white" if rates[i, j] > 0.5 else "black")
    return fig


def plot_run(out_dir: str | Path, history: list[dict], confusion: list[list[int]] | None,
             classes: list[str]) -> None:
    """``curves.png`` and (given a confusion matrix) ``confusion.png`` in ``out_dir``."""
    save_figure(Path(out_dir) / "curves.png", curves_figure(history))
    if confusion is not None:
        save_figure(Path(out_dir) / "confusion.png", confusion_figure(confusion, classes))


def save_figure(path: str | Path, fig: Figure) -> None:
    """A matplotlib figure as a PNG, written atomically (no pyplot: no backend is switched)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")

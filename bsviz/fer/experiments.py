"""The paper's experiments: CK+ folds and FER2013 seeds, summaries, references, plots."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bsviz.explain import linear_probe
from bsviz.files import atomic_path
from bsviz.train import TrainConfig, train


def run_once(cfg: TrainConfig) -> dict:
    """``train(cfg)``, or the ``result.json`` it left, so an interrupted experiment resumes
    (a half-finished run continues from its ``last.pt``)."""
    done = Path(cfg.out_dir) / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    return train(replace(cfg, resume=True))


def fer2013_experiment(base: TrainConfig, seeds: list[int], fusion_epochs: int = 15) -> dict:
    """FER2013: per seed, the image stream, the blendshape stream and BlendshapeFERNet
    (initialised from both), each selected on PublicTest and tested once on PrivateTest.

    Runs go to ``<base.out_dir>/{image,blendshape,two_stream}/seed<s>``.
    """
    out, runs = Path(base.out_dir), {"image": [], "blendshape": [], "two_stream": []}
    for seed in seeds:
        common = replace(base, dataset="fer2013", seed=seed)
        paths = {kind: out / kind / f"seed{seed}" for kind in runs}
        for kind in ("image", "blendshape"):
            runs[kind].append(run_once(replace(common, kind=kind, out_dir=str(paths[kind]))))
        runs["two_stream"].append(run_once(replace(
            common, kind="two_stream", out_dir=str(paths["two_stream"]), epochs=fusion_epochs,
            init_image=str(paths["image"] / "best.pt"),
            init_blendshape=str(paths["blendshape"] / "best.pt"))))
    return _summarise("fer2013", runs, "seed", seeds, out)


def ck_experiment(base: TrainConfig, init_image: str, init_blendshape: str,
                  folds: list[int] | None = None) -> dict:
    """CK+ subject-independent k-fold: image stream and BlendshapeFERNet, both started from
    the FER2013-pretrained streams (standing in for the paper's face-recognition
    pretraining), fine-tuned and tested on each fold."""
    out, runs = Path(base.out_dir), {"image": [], "two_stream": []}
    folds = list(range(base.n_folds)) if folds is None else folds
    for fold in folds:
        common = replace(base, dataset="ck+", fold=fold, init_image=init_image)
        runs["image"].append(run_once(replace(common, kind="image",
                                              out_dir=str(out / "image" / f"fold{fold}"))))
        runs["two_stream"].append(run_once(replace(
            common, kind="two_stream", init_blendshape=init_blendshape,
            out_dir=str(out / "two_stream" / f"fold{fold}"))))
    return _summarise("ck+", runs, "fold", folds, out)


METRICS = ("test_accuracy", "test_mae", "test_accuracy_flip", "test_mae_flip", "val_accuracy",
           "val_mae")


def _summarise(dataset: str, runs: dict[str, list[dict]], key: str, values: list[int],
               out: Path) -> dict:
    """Mean and std of test accuracy / weight MAE per network (faces as given, and with
    test-time flip), summed confusion matrices, and the paired difference two-stream - image
    per run (the paper's ablation)."""
    summary: dict = {"dataset": dataset, key + "s": values, "models": {}}
    for kind, results in runs.items():
        model = {"runs": [{key: v, **{m: r.get(m) for m in METRICS},
                           "best_epoch": r.get("best_epoch"), "n_test": r.get("n_test")}
                          for v, r in zip(values, results)]}
        for metric in METRICS:
            model.update(_mean_std([r.get(metric) for r in results], metric))
        confusions = [np.array(r["confusion"]) for r in results if r.get("confusion")]
        if confusions:
            total = np.sum(confusions, axis=0)
            model["confusion"] = total.tolist()
            model["pooled_accuracy"] = float(np.trace(total) / total.sum())
            save_figure(out / f"confusion_{kind}.png", confusion_figure(total, results[0]["classes"]))
        summary["models"][kind] = model
        summary["classes"] = results[0]["classes"]
    if "image" in runs and "two_stream" in runs:
        for suffix in ("", "_flip"):
            pairs = [(i.get("test_accuracy" + suffix), t.get("test_accuracy" + suffix))
                     for i, t in zip(runs["image"], runs["two_stream"])]
            gains = [t - i for i, t in pairs if i is not None and t is not None]
            if gains:
                summary["two_stream_minus_image" + suffix] = _mean_std(gains, "difference")
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


def blendshape_reference(data_dir: str | Path, ck_labels: str | Path, fer_labels: str | Path,
                         regressor: str | Path | None = None, n_folds: int = 10,
                         cache_dir: str | Path = "runs/cache") -> dict:
    """A linear classifier on blendshape features alone: MediaPipe's 52 scores, and (given a
    blendshape-stream or two-stream checkpoint) our 53 regressed weights, each fitted as a
    ``linear_probe`` (multinomial logistic regression, L2 penalty 1e-3) to the true classes.

    CK+: the same subject-independent folds as the networks. FER2013: train -> PrivateTest;
    images where MediaPipe found no face count as errors for the MediaPipe features.
    """
    from bsviz import data as datasets
    from bsviz.labels import load_labels

    data_dir = Path(data_dir)
    ck = datasets.load_ck(data_dir / "ck+48")
    fer = datasets.load_fer2013(data_dir / "fer2013")
    out: dict = {}
    for name, ds, label_file in (("ck+", ck, ck_labels), ("fer2013", fer, fer_labels)):
        labels = load_labels(label_file)
        rows = labels.rows(ds.paths, data_dir / ("ck+48" if name == "ck+" else "fer2013"))
        features = {"mediapipe": (labels.scores[rows], labels.detected[rows])}
        if regressor is not None:
            regressed = _regress(regressor, ds.paths, Path(cache_dir))
            features["regressed"] = (regressed, np.ones(len(ds), bool))
        for feature, (x, ok) in features.items():
            if name == "ck+":
                folds = datasets.subject_folds(ck.subjects, ck.labels, n_folds, seed=0)
                accs = []
                for fold in folds:
                    train = fold.train[ok[fold.train]]
                    probe = linear_probe(x[train], ds.labels[train], len(ds.classes), l2=1e-3)
                    pred = probe.predict(np.nan_to_num(x[fold.test]))
                    accs.append(float(((pred == ds.labels[fold.test]) & ok[fold.test]).mean()))
                out[f"{name} {feature}"] = _mean_std(accs, "accuracy")
            else:
                train = np.flatnonzero((fer.splits == "train") & ok)
                test = np.flatnonzero(fer.splits == "private_test")
                probe = linear_probe(x[train], ds.labels[train], len(ds.classes), l2=1e-3)
                pred = probe.predict(np.nan_to_num(x[test]))
                out[f"{name} {feature}"] = {
                    "accuracy": float(((pred == ds.labels[test]) & ok[test]).mean()),
                    "accuracy_where_detected": float((pred == ds.labels[test])[ok[test]].mean())}
    return out


def synthetic_mae(checkpoint_path: str | Path, synth_path: str | Path) -> dict:
    """How well a blendshape stream recovers known weights: MAE against the exact weights of
    synthetic renders (``bsviz synth``), next to MediaPipe's MAE on the same crops and a
    constant guess (the mean weights)."""
    from bsviz.synth import load_synth
    from bsviz.train import load_checkpoint, model_from_checkpoint

    synth = load_synth(synth_path)
    model = model_from_checkpoint(load_checkpoint(checkpoint_path)).float()
    stream = getattr(model, "blendshape", model)
    images = torch.from_numpy(synth.images.astype(np.float32) / 255)
    with torch.no_grad():
        ours = torch.cat([stream(images[i:i + 1024]).output
                          for i in range(0, len(images), 1024)]).numpy()
    exact = synth.weights
    seen = ~np.isnan(synth.mediapipe_weights).any(axis=1)
    return {"n": len(exact), "ours": float(np.abs(ours - exact).mean()),
            "mediapipe": float(np.abs(synth.mediapipe_weights[seen] - exact[seen]).mean()),
            "constant_guess": float(np.abs(exact.mean(axis=0) - exact).mean())}


def _regress(checkpoint_path: str | Path, paths: list[Path], cache: Path) -> np.ndarray:
    """(N, K) blendshape weights regressed by a checkpoint's blendshape stream."""
    from bsviz import data as datasets
    from bsviz.train import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(checkpoint_path)).float()
    stream = getattr(model, "blendshape", model)
    cache.mkdir(parents=True, exist_ok=True)
    images = torch.from_numpy(datasets.load_images(paths, cache_dir=cache))
    with torch.no_grad():
        return torch.cat([stream(images[i:i + 1024]).output
                          for i in range(0, len(images), 1024)]).numpy()


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
        acc = (_percent(value, "accuracy") if "accuracy_mean" in value
               else f"{100 * value['accuracy']:.2f} %")
        dataset, feature = name.split(" ", 1)
        rows.append(f"| {dataset} | logistic regression on {feature} blendshapes | {acc} | | |")
    return "\n".join(rows)


def _mean_std(values: list, name: str) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {}
    return {f"{name}_mean": float(np.mean(values)), f"{name}_std": float(np.std(values)),
            f"{name}_n": len(values)}


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

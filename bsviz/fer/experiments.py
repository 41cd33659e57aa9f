"""The paper's experiments: FER2013 over seeds, CK+ over folds, their summaries, and the
blendshape-only references."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import torch

from bsviz.fer import data as datasets
from bsviz.fer.checkpoints import (
    load_checkpoint,
    model_from_checkpoint,
    pack_checkpoint,
)
from bsviz.fer.config import TrainConfig
from bsviz.fer.explain import linear_probe
from bsviz.fer.labels import load_labels
from bsviz.fer.reports import confusion_figure, save_figure
from bsviz.fer.synth import load_synth
from bsviz.fer.train import train
from bsviz.files import atomic_path


def run_once(cfg: TrainConfig, record: Path | None = None, checkpoint: bool = False) -> dict:
    """``train(cfg)``, unless its result is known: from the ``result.json`` the run left in
    its ``out_dir``, or from ``record``, its summary kept elsewhere (committed under
    ``results/``, so an experiment goes on from a fresh clone without ``runs/``). A
    half-finished run continues from its ``last.pt``. With ``checkpoint`` its ``best.pt`` is
    needed too (a later run starts from it): a run known only from its record is trained
    again (the same run: training is deterministic for a seed). The result is written to
    ``record`` if it is not there yet."""
    out = Path(cfg.out_dir)
    known = [p for p in (out / "result.json", record) if p is not None and p.exists()]
    if known and (not checkpoint or (out / "best.pt").exists()):
        result = json.loads(known[0].read_text())
    else:
        result = train(replace(cfg, resume=True))
    if record is not None and not record.exists():
        record.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps(result, indent=1))
    return result


def fer2013_experiment(base: TrainConfig, seeds: list[int], fusion_epochs: int = 10,
                       records: str | Path | None = None) -> dict:
    """FER2013: per seed, the image stream, the blendshape stream and BlendshapeFERNet
    (initialised from both), each selected on PublicTest and tested once on PrivateTest.

    Runs go to ``<base.out_dir>/{image,blendshape,two_stream}/seed<s>``; with ``records``
    each finished run's result is also kept as ``<records>/<kind>-seed<s>.json``, and runs
    whose record is there are not trained again (``run_once``).
    """
    out, runs = Path(base.out_dir), {"image": [], "blendshape": [], "two_stream": []}
    for seed in seeds:
        common = replace(base, dataset="fer2013", seed=seed)
        paths = {kind: out / kind / f"seed{seed}" for kind in runs}
        record = {kind: Path(records) / f"{kind}-seed{seed}.json" if records else None
                  for kind in runs}
        fused_known = record["two_stream"] is not None and record["two_stream"].exists()
        for kind in ("image", "blendshape"):
            runs[kind].append(run_once(replace(common, kind=kind, out_dir=str(paths[kind])),
                                       record[kind], checkpoint=not fused_known))
        runs["two_stream"].append(run_once(replace(
            common, kind="two_stream", out_dir=str(paths["two_stream"]), epochs=fusion_epochs,
            init_image=str(paths["image"] / "best.pt"),
            init_blendshape=str(paths["blendshape"] / "best.pt")), record["two_stream"]))
    return _summarise("fer2013", runs, "seed", seeds, out)


def ck_experiment(base: TrainConfig, init_image: str, init_blendshape: str,
                  folds: list[int] | None = None, records: str | Path | None = None,
                  networks: tuple[str, ...] = ("image", "two_stream")) -> dict:
    """CK+ subject-independent k-fold: image stream and BlendshapeFERNet (or one of them,
    ``networks``), both started from the FER2013-pretrained streams (standing in for the
    paper's face-recognition pretraining), fine-tuned and tested on each fold. ``records``: as
    for ``fer2013_experiment`` (``<records>/<kind>-fold<f>.json``)."""
    out, runs = Path(base.out_dir), {kind: [] for kind in networks}
    folds = list(range(base.n_folds)) if folds is None else folds
    for fold in folds:
        common = replace(base, dataset="ck+", fold=fold, init_image=init_image)
        for kind in networks:
            record = Path(records) / f"{kind}-fold{fold}.json" if records else None
            cfg = replace(common, kind=kind, out_dir=str(out / kind / f"fold{fold}"))
            if kind == "two_stream":
                cfg = replace(cfg, init_blendshape=init_blendshape)
            runs[kind].append(run_once(cfg, record))
    return _summarise("ck+", runs, "fold", folds, out)


NETWORK_NAMES = {"image": "image stream", "blendshape": "blendshape stream",
                 "two_stream": "BlendshapeFERNet (two-stream)"}


def ship_best(run_dirs: list[str | Path], out: str | Path) -> dict:
    """Pack the run with the best validation accuracy (PublicTest on FER2013: the choice
    sees no test score) among ``run_dirs`` (each holding ``best.pt`` and ``result.json``)
    into the release file ``out``, with its model card; returns the card."""
    results = [json.loads((Path(d) / "result.json").read_text()) for d in run_dirs]
    best = max(range(len(results)), key=lambda i: results[i]["val_accuracy"])
    result, cfg = results[best], results[best]["config"]
    card = {
        "model": f"{NETWORK_NAMES[cfg['kind']]}, {len(result['classes'])} {cfg['dataset']} "
                 "classes",
        "data": f"{cfg['dataset']} train, the photo path's face crops ({cfg['labels']})",
        "protocol": "best epoch by validation accuracy; the run with the best validation "
                    f"accuracy of {len(results)}; the test split reported once",
        "chosen_from": {str(d): r["val_accuracy"] for d, r in zip(run_dirs, results)},
        "seed": cfg["seed"], "best_epoch": result["best_epoch"],
        "validation_accuracy": result["val_accuracy"],
        "test_accuracy": result["test_accuracy"], "test_weight_mae": result.get("test_mae"),
        "test_accuracy_test_time_flip": result["test_accuracy_flip"],
        "test_weight_mae_test_time_flip": result.get("test_mae_flip"),
        "recipe": {k: cfg[k] for k in ("epochs", "optimizer", "lr", "widths", "pool_after",
                                       "feature_dim", "freeze_epochs", "finetune_lr",
                                       "init_image", "init_blendshape")},
        "date": date.today().isoformat(),
        "inference": "bsviz.fer.predict.Predictor averages each crop with its mirror image "
                     "(test-time flip) unless flip=False",
    }
    pack_checkpoint(Path(run_dirs[best]) / "best.pt", out, card)
    return card


METRICS = ("test_accuracy", "test_mae", "test_accuracy_flip", "test_mae_flip", "val_accuracy",
           "val_mae")


def _summarise(dataset: str, runs: dict[str, list[dict]], key: str, values: list[int],
               out: Path) -> dict:
    """Mean and std of test accuracy / weight MAE per network (faces as given, and with
    test-time flip), summed confusion matrices, and the paired difference two-stream - image
    per run (the paper's ablation)."""
    out.mkdir(parents=True, exist_ok=True)  # absent when every run was known from its record
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
                         regressor: str | Path | None = None, n_folds: int = 10) -> dict:
    """A linear classifier on blendshape features alone: MediaPipe's 52 scores, and (given a
    blendshape-stream or two-stream checkpoint) our 53 regressed weights, each fitted as a
    ``linear_probe`` (multinomial logistic regression, L2 penalty 1e-3) to the true classes.

    CK+: the same subject-independent folds as the networks. FER2013: train -> PrivateTest;
    images where MediaPipe found no face count as errors for the MediaPipe features.
    """
    data_dir = Path(data_dir)
    ck = datasets.load_ck(data_dir / "ck+48")
    fer = datasets.load_fer2013(data_dir / "fer2013")
    out: dict = {}
    for name, ds, label_file in (("ck+", ck, ck_labels), ("fer2013", fer, fer_labels)):
        labels = load_labels(label_file)
        folder = "ck+48" if name == "ck+" else "fer2013"
        rows = labels.rows(ds.paths, data_dir / folder)
        features = {"mediapipe": (labels.scores[rows], labels.detected[rows])}
        if regressor is not None:  # on the crops the networks read (the photo path's)
            regressed = _regress(regressor, labels.images(ds.paths, data_dir / folder))
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
    synth = load_synth(synth_path)
    ours = _regress(checkpoint_path, synth.images.astype(np.float32) / 255)
    exact = synth.weights
    seen = ~np.isnan(synth.mediapipe_weights).any(axis=1)
    return {"n": len(exact), "ours": float(np.abs(ours - exact).mean()),
            "mediapipe": float(np.abs(synth.mediapipe_weights[seen] - exact[seen]).mean()),
            "constant_guess": float(np.abs(exact.mean(axis=0) - exact).mean())}


def _regress(checkpoint_path: str | Path, images: np.ndarray) -> np.ndarray:
    """(N, K) blendshape weights regressed from images (N, 1, H, W) in [0, 1] by a checkpoint's
    blendshape stream."""
    model = model_from_checkpoint(load_checkpoint(checkpoint_path)).float()
    stream = model.streams()["blendshape"]
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32))
    with torch.no_grad():
        return torch.cat([stream(x[i:i + 1024]).weights for i in range(0, len(x), 1024)]).numpy()


def _mean_std(values: list, name: str) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {}
    return {f"{name}_mean": float(np.mean(values)), f"{name}_std": float(np.std(values)),
            f"{name}_n": len(values)}



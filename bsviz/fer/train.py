"""Training: ``train(cfg)`` for the image stream, the blendshape stream and BlendshapeFERNet.

One function serves the CLI (``bsviz train``), the notebooks and ``torchrun``:

* data: FER2013 keeps its split (train / PublicTest for model selection / PrivateTest
  reported once, with the best checkpoint); CK+ uses subject-independent fold ``cfg.fold``
  of ``cfg.n_folds``, with a validation set carved from the training subjects;
* images without a blendshape label (no face found) are masked out of the L2 loss and
  kept for classification (``models.training_loss``);
* what differs per network lives with the networks (``models``): their outputs, their loss,
  and which parts start pretrained (``pretrained()``). For BlendshapeFERNet those are its
  streams, initialised from their own checkpoints, held still for ``freeze_epochs`` epochs
  while the random fusion layer learns (so it cannot wreck the pretrained features), then
  fine-tuned with everything at ``finetune_lr``;
* the networks read the photo path's face crops from the label file (``labels.Labels.crops``),
  so a face scores in ``bsviz eval`` as it does through ``bsviz predict``; the blendshape
  labels are MediaPipe's scores mapped to the rig, or the rig fitted to the landmarks
  (``blendshape_labels="fit"``), and the blendshape stream can add synthetic renders of the
  rig with their exact weights (``synth``);
* the recipe: AdamW or SGD-Nesterov, warm-up then cosine decay, label smoothing, flips and
  small affine jitter, optionally mixup, random erasing and an exponential moving average of
  the weights (which is then what is validated, checkpointed and tested);
* bf16 autocast on CUDA and on CPUs with AVX512-BF16; checkpoints written atomically
  every epoch (``last.pt``, and ``best.pt`` on a better validation score) with config,
  class names and shape names inside; ``resume`` continues from ``last.pt``, losing at
  most the epoch in progress; deterministic for a seed (each epoch reseeds from
  ``seed`` and its number, so a resumed run repeats what the uninterrupted one does);
* several processes under ``torchrun`` (DistributedDataParallel; gloo on CPU).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm  # a widget in notebooks (cleared after each epoch), text on the CLI

from bsviz.fer import data as datasets
from bsviz.fer.augment import augment, erase, mixup
from bsviz.fer.checkpoints import (
    CheckpointError,
    init_stream,
    load_checkpoint,
    save_checkpoint,
)
from bsviz.fer.config import FILE_FIELDS, RESUMABLE_CHANGES, TrainConfig
from bsviz.fer.labels import load_labels
from bsviz.fer.models import Network, build_network, training_loss
from bsviz.fer.reports import confusion_matrix, plot_run
from bsviz.fer.synth import load_synth
from bsviz.files import atomic_path
from bsviz.rig.rig import load_rig, mirror_permutation


@dataclass
class Split:
    """images: (N, 1, H, W) float32 in [0, 1]; labels: (N,) int64; weights: (N, K) float32
    with NaN rows where no face (so no blendshape label) was found."""

    images: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...]
    shape_names: tuple[str, ...]
    mirror: list[int] = field(default_factory=list)  # weight permutation for a flipped image


def load_data(cfg: TrainConfig) -> Data:
    """The train / validation / test splits of ``cfg.dataset`` as tensors."""
    if not cfg.data_dir:
        raise ValueError("TrainConfig.data_dir is not set: the folder holding fer2013/ and ck+48/")
    root = Path(cfg.data_dir) / ("fer2013" if cfg.dataset == "fer2013" else "ck+48")
    if cfg.dataset == "fer2013":
        ds = datasets.load_fer2013(root)
        parts = [np.flatnonzero(ds.splits == s) for s in ("train", "public_test", "private_test")]
    else:
        ds = datasets.load_ck(root)
        fold = datasets.subject_folds(ds.subjects, ds.labels, cfg.n_folds, seed=0)[cfg.fold]
        parts = [fold.train, fold.val, fold.test]
    if cfg.limit:
        parts[0] = datasets.stratified_subset(parts[0], ds.labels, cfg.limit)
    names = load_rig().names
    if cfg.labels:
        labels = load_labels(cfg.labels)
        rows = labels.rows(ds.paths, root)
        if labels.names != names:
            raise ValueError(f"label file {cfg.labels} has other shape names than the rig")
        if cfg.blendshape_labels == "fit" and labels.fitted is None:
            raise ValueError(f"label file {cfg.labels} has no fitted weights (made by an older "
                             "bsviz): label the dataset again with `bsviz label`")
        weights = (labels.fitted if cfg.blendshape_labels == "fit" else labels.weights)[rows]
    elif cfg.kind == "image":
        weights = np.full((len(ds), len(names)), np.nan, np.float32)
    else:
        raise ValueError(f"a {cfg.kind} model needs blendshape labels: pass labels=FILE "
                         f"(made by `bsviz label --data-dir {root}`)")
    keep = np.concatenate(parts)
    if cfg.labels:  # the photo path's crops
        images = labels.inputs(rows[keep])
    else:
        Path(cfg.cache_dir).mkdir(parents=True, exist_ok=True)
        images = datasets.load_images([ds.paths[i] for i in keep], cache_dir=cfg.cache_dir)
    where = {i: j for j, i in enumerate(keep)}

    def split(idx: np.ndarray) -> Split:
        j = np.array([where[i] for i in idx], dtype=np.int64)
        return Split(torch.from_numpy(images[j]), torch.from_numpy(ds.labels[idx]),
                     torch.from_numpy(np.asarray(weights[idx], np.float32)))

    train_split = split(parts[0])
    if cfg.synth:
        train_split = with_synth(train_split, cfg.synth, names)
    return Data(train_split, split(parts[1]), split(parts[2]), ds.classes, names,
                mirror_permutation(names))


def with_synth(split: Split, path: str | Path, names: tuple[str, ...]) -> Split:
    """``split`` followed by the synthetic renders of ``path`` (``bsviz synth``): their crops,
    their exact weights, and class -1 (they have none; only the blendshape stream uses them)."""
    synth = load_synth(path)
    if synth.names != names:
        raise ValueError(f"synthetic renders {path} have other shape names than the rig")
    if synth.images.shape[1:] != split.images.shape[1:]:
        raise ValueError(f"synthetic renders {path} are {synth.images.shape[2:]} px, "
                         f"the training images {tuple(split.images.shape[2:])}")
    images = torch.from_numpy(synth.images.astype(np.float32) / 255)
    return Split(torch.cat([split.images, images]),
                 torch.cat([split.labels, torch.full((len(images),), -1, dtype=torch.int64)]),
                 torch.cat([split.weights, torch.from_numpy(synth.weights.astype(np.float32))]))


def build_model(cfg: TrainConfig, classes: tuple[str, ...], n_shapes: int) -> Network:
    """The network ``cfg.kind`` names, its streams initialised from ``cfg.init_*`` if given."""
    model = build_network(cfg.kind, len(classes), n_shapes, widths=cfg.widths,
                          pool_after=cfg.pool_after, feature_dim=cfg.feature_dim)
    for kind, stream in model.streams().items():
        path = cfg.init_image if kind == "image" else cfg.init_blendshape
        if path:
            init_stream(stream, load_checkpoint(path), classes)
    return model


# --------------------------------------------------------------------------- evaluation


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _autocast(cfg: TrainConfig, device: torch.device):
    """bf16 autocast where the hardware runs it fast (CUDA, AVX512-BF16 CPUs), else off."""
    fast_bf16 = device.type == "cuda" or getattr(torch.cpu, "_is_avx512_bf16_supported",
                                                  lambda: False)()
    enabled = cfg.amp == "bf16" or (cfg.amp == "auto" and fast_bf16)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@dataclass
class Metrics:
    loss: float
    accuracy: float | None        # classification accuracy (image / two-stream)
    mae: float | None             # mean |w - w*| over labelled images (blendshape / two-stream)
    predictions: np.ndarray | None = None  # (N,) predicted classes

    @property
    def score(self) -> float:
        """Higher is better: the accuracy, or minus the weight MAE for a network that does not
        classify."""
        return self.accuracy if self.accuracy is not None else -self.mae


@torch.no_grad()
def evaluate(model: Network, split: Split, cfg: TrainConfig, mirror: list[int] | None = None,
             batch_size: int = 512) -> Metrics:
    """Loss, accuracy and weight MAE of ``model`` on a split (eval mode, no augmentation).

    With ``mirror`` (the weight permutation of a flipped face, ``Data.mirror``) every face is
    also seen flipped left-right, and the two views are averaged (test-time flip): the class
    probabilities, and the weights with the flipped view's mirrored back. The loss stays that
    of the faces as given.
    """
    device = next(model.parameters()).device
    model.eval()
    total, errors, labelled, preds = 0.0, 0.0, 0, []
    for start in range(0, len(split), batch_size):
        x = split.images[start:start + batch_size].to(device)
        y = split.labels[start:start + batch_size].to(device)
        w = split.weights[start:start + batch_size].to(device)
        with _autocast(cfg, device):
            out = model(x.contiguous(memory_format=torch.channels_last))
        total += training_loss(out, y, w, cfg.label_smoothing,
                               cfg.blendshape_loss_weight).item() * len(y)
        scores = None if out.logits is None else out.logits.float().softmax(1)
        weights = None if out.weights is None else out.weights.float()
        if mirror is not None:
            with _autocast(cfg, device):
                flipped = model(x.flip(3).contiguous(memory_format=torch.channels_last))
            if scores is not None:
                scores = scores + flipped.logits.float().softmax(1)
            if weights is not None:
                weights = (weights + flipped.weights.float()[:, mirror]) / 2
        if scores is not None:
            preds.append(scores.argmax(dim=1).cpu())
        if weights is not None:
            known = ~torch.isnan(w).any(dim=1)
            errors += (weights[known] - w[known]).abs().mean(dim=1).sum().item()
            labelled += int(known.sum())
    pred = torch.cat(preds).numpy() if preds else None
    accuracy = float((pred == split.labels.numpy()).mean()) if pred is not None else None
    return Metrics(total / max(len(split), 1), accuracy,
                   errors / labelled if labelled else None, pred)


# --------------------------------------------------------------------------- training


def learning_rate(cfg: TrainConfig, epoch: float, pretrained: bool) -> float:
    """Linear warm-up then cosine decay, at ``epoch`` (fractional). A network with
    ``pretrained`` parts switches to ``finetune_lr`` once they are no longer held still."""
    base = cfg.finetune_lr if pretrained and epoch >= cfg.freeze_epochs else cfg.lr
    if epoch < cfg.warmup_epochs:
        return base * (epoch + 1e-3) / cfg.warmup_epochs
    progress = (epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    return base * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def param_groups(model: Network, weight_decay: float) -> list[dict]:
    """Optimizer groups: weight decay on weights, none on biases and norms; the groups of the
    network's ``pretrained()`` parts are marked ``pretrained`` (held still at first)."""
    held = {id(p) for part in model.pretrained() for p in part.parameters()}
    groups = []
    for pretrained in (True, False):
        for decay in (True, False):
            params = [p for p in model.parameters()
                      if (id(p) in held) == pretrained and (p.ndim > 1) == decay]
            if params:
                groups.append({"params": params, "pretrained": pretrained,
                               "weight_decay": weight_decay if decay else 0.0})
    return groups


def make_optimizer(cfg: TrainConfig, model: Network) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum 0.9, over ``param_groups``."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


@torch.no_grad()
def update_average(average: Network, model: Network, decay: float) -> None:
    """average <- decay average + (1 - decay) model, over the parameters and the floating
    buffers (BatchNorm statistics); integer buffers are copied."""
    # parameters() and buffers(), not state_dict(): no dict built at every step
    for a, m in zip([*average.parameters(), *average.buffers()],
                    [*model.parameters(), *model.buffers()]):
        if a.is_floating_point():
            a.lerp_(m, 1 - decay)
        else:
            a.copy_(m)


def train(cfg: TrainConfig, on_epoch: Callable[[list[dict]], None] | None = None) -> dict:
    """Train one network as ``cfg`` says; return its history and final test metrics.

    Writes into ``cfg.out_dir``: ``last.pt``, ``best.pt``, ``metrics.csv``,
    ``history.json``, ``result.json`` and plots (``curves.png``, ``confusion.png``).
    ``on_epoch(history)`` is called after each epoch's checkpoint is written (e.g. to redraw
    curves in a notebook; interrupting there loses nothing, ``resume`` continues).
    """
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = _device(cfg)
    if distributed:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    try:
        return _train(cfg, device, rank, world, on_epoch)
    finally:
        if distributed:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, device: torch.device, rank: int, world: int,
           on_epoch: Callable[[list[dict]], None] | None) -> dict:
    lead = rank == 0
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg)

    # the network, its optimizer, and where a resumed run left off
    torch.manual_seed(cfg.seed)
    net = build_model(cfg, data.classes, len(data.shape_names))
    net = net.to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, net)
    # with ``cfg.ema`` the moving average is the network that is validated, saved and tested
    average = copy.deepcopy(net) if cfg.ema else None
    evaluated = average if average is not None else net
    history, start_epoch, best = [], 0, -math.inf
    if cfg.resume and (out_dir / "last.pt").exists():
        checkpoint = _resumable(out_dir / "last.pt", cfg)
        net.load_state_dict(checkpoint.get("trained", checkpoint["model"]))
        evaluated.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        history, start_epoch, best = checkpoint["history"], checkpoint["epoch"] + 1, checkpoint["best"]
    model = net if world == 1 else torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None)
    meta = {"kind": net.kind, "config": asdict(cfg), "model_config": asdict(net.cfg),
            "classes": list(data.classes), "shape_names": list(data.shape_names),
            "cwd": os.getcwd()}  # what the config's relative paths are relative to
    pretrained = net.pretrained()
    n = len(data.train)
    steps = n // (cfg.batch_size * world) or 1

    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout; same on resume
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(n, generator=gen)
        held = epoch < cfg.freeze_epochs and bool(pretrained)
        model.train()
        for part in pretrained if held else ():
            part.eval()  # BatchNorm statistics kept as pretrained
        started, cpu_started, seen, loss_sum = time.time(), time.process_time(), 0, 0.0
        bar = tqdm(range(steps), desc=f"{cfg.kind} epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and lead), leave=False)
        for step in bar:
            batch = order[(step * world + rank) * cfg.batch_size:][:cfg.batch_size]
            x, y, w = data.train.images[batch], data.train.labels[batch], data.train.weights[batch]
            if cfg.augment:
                x, w = augment(x, w, data.mirror, gen)
            if cfg.erasing:
                x = erase(x, cfg.erasing, gen)
            if cfg.mixup and net.kind != "blendshape":
                x, y, w = mixup(x, y, w, len(data.classes), cfg.mixup, gen)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            y, w = y.to(device), w.to(device)
            lr = learning_rate(cfg, epoch + step / steps, bool(pretrained))
            for group in optimizer.param_groups:
                group["lr"] = 0.0 if held and group["pretrained"] else lr
            with _autocast(cfg, device):
                out = model(x)
            loss = training_loss(out, y, w, cfg.label_smoothing, cfg.blendshape_loss_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if average is not None:  # the decay warms up, or early epochs' average is the init
                t = epoch * steps + step
                update_average(average, net, min(cfg.ema, (1 + t) / (10 + t)))
            loss_sum += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")

        # validate, keep the best, checkpoint every epoch
        seconds = time.time() - started
        val = evaluate(evaluated, data.val, cfg)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "val_loss": val.loss,
               "val_accuracy": val.accuracy, "val_mae": val.mae,
               "lr": learning_rate(cfg, epoch + 1 - 1e-9, bool(pretrained)),
               "seconds": seconds, "images_per_s": seen * world / seconds,
               "cpu_seconds": time.process_time() - cpu_started}  # this process, with validation
        history.append(row)
        if lead:
            checkpoint = {**meta, "model": evaluated.state_dict(),
                          "optimizer": optimizer.state_dict(), "epoch": epoch,
                          "history": history, "best": max(best, val.score)}
            if average is not None:
                checkpoint["trained"] = net.state_dict()  # what training goes on from
            if val.score > best:
                best = val.score
                save_checkpoint(out_dir / "best.pt", checkpoint)
            save_checkpoint(out_dir / "last.pt", checkpoint)
            _log(out_dir, history)
            if cfg.progress:
                tqdm.write(_describe(row))
            if on_epoch is not None:
                on_epoch(history)

    result = {"config": asdict(cfg), "classes": list(data.classes), "history": history}
    if lead:
        result.update(_final_test(cfg, evaluated, data, out_dir))
    return result


def _resumable(path: Path, cfg: TrainConfig) -> dict:
    """The checkpoint to resume from; CheckpointError if it was made with another config.
    Input files count as the same when their paths lead to the same place (a run started by
    the CLI from the repository's root continues from a notebook's absolute paths)."""
    checkpoint = load_checkpoint(path)
    saved, now = checkpoint.get("config", {}), asdict(cfg)
    then = Path(checkpoint.get("cwd", os.getcwd()))

    def same(key: str) -> bool:
        old, new = _plain(saved.get(key)), _plain(now[key])
        if key in FILE_FIELDS and old is not None and new is not None:
            return (then / old).resolve() == Path(new).resolve()
        return old == new

    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and not same(k))
    if changed:
        raise CheckpointError(f"cannot resume from {path}: it was trained with other "
                              f"{', '.join(changed)} (use another --out-dir for a new run)")
    return checkpoint


def _plain(value):
    """A config value as JSON would hold it (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def _final_test(cfg: TrainConfig, net: Network, data: Data, out_dir: Path) -> dict:
    """Test metrics of the best checkpoint (reported once: faces as given, and with test-time
    flip), plots, ``result.json``."""
    best = load_checkpoint(out_dir / "best.pt")
    net.load_state_dict(best["model"])
    test = evaluate(net, data.test, cfg)
    flipped = evaluate(net, data.test, cfg, mirror=data.mirror)
    chosen = best["history"][-1]  # the validation scores that chose this checkpoint
    result = {"best_epoch": best["epoch"] + 1, "val_accuracy": chosen["val_accuracy"],
              "val_mae": chosen["val_mae"], "test_loss": test.loss,
              "test_accuracy": test.accuracy, "test_mae": test.mae,
              "test_accuracy_flip": flipped.accuracy, "test_mae_flip": flipped.mae,
              "n_test": len(data.test),
              "n_train_unlabelled": int(torch.isnan(data.train.weights).any(dim=1).sum())}
    if test.predictions is not None:
        result["confusion"] = confusion_matrix(data.test.labels.numpy(), test.predictions,
                                               len(data.classes)).tolist()
    with atomic_path(out_dir / "result.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(cfg), "classes": list(data.classes),
                                   **result}, indent=2))
    plot_run(out_dir, best["history"], result.get("confusion"), list(data.classes))
    return result


def _describe(row: dict) -> str:
    parts = [f"epoch {row['epoch']}", f"train loss {row['train_loss']:.4f}",
             f"val loss {row['val_loss']:.4f}"]
    if row["val_accuracy"] is not None:
        parts.append(f"val acc {row['val_accuracy']:.4f}")
    if row["val_mae"] is not None:
        parts.append(f"val MAE {row['val_mae']:.4f}")
    parts.append(f"{row['images_per_s']:.0f} img/s")
    return ", ".join(parts)


def _log(out_dir: Path, history: list[dict]) -> None:
    """metrics.csv and history.json, rewritten whole (atomically) each epoch."""
    with atomic_path(out_dir / "metrics.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    with atomic_path(out_dir / "history.json") as tmp:
        tmp.write_text(json.dumps(history, indent=1))

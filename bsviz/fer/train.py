"""Training: ``train(cfg)`` for the image stream, the blendshape stream and BlendshapeFERNet.

One function serves the CLI (``bsviz train``), the notebooks and ``torchrun``:

* data: FER2013 keeps its split (train / PublicTest for model selection / PrivateTest
  reported once, with the best checkpoint); CK+ uses subject-independent fold ``cfg.fold``
  of ``cfg.n_folds``, with a validation set carved from the training subjects;
* images without a blendshape label (no face found) are masked out of the L2 loss and
  kept for classification;
* recipe for the two-stream network: streams initialised from their pretrained
  checkpoints, ``freeze_epochs`` epochs training only the fusion layer (so the random
  fusion layer cannot wreck the pretrained features), then everything fine-tuned at
  ``finetune_lr``, keeping the blendshape L2 loss so the second stream still regresses
  weights;
* bf16 autocast on CUDA and on CPUs with AVX512-BF16; checkpoints written atomically
  every epoch (``last.pt``, and ``best.pt`` on a better validation score) with config,
  class names and shape names inside; ``resume`` continues from ``last.pt``, losing at
  most the epoch in progress; deterministic for a seed (each epoch reseeds from
  ``seed`` and its number, so a resumed run repeats what the uninterrupted one does);
* several processes under ``torchrun`` (DistributedDataParallel; gloo on CPU).
"""

from __future__ import annotations

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
import torch.nn.functional as F
from tqdm import tqdm

from bsviz.files import atomic_path
from bsviz.models import (BlendshapeFERNet, Stream, StreamConfig, TwoStreamConfig,
                          blendshape_loss, blendshape_stream_config, expression_loss,
                          image_stream_config)

KINDS = ("image", "blendshape", "two_stream")


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in every checkpoint."""

    kind: str = "image"                  # image | blendshape | two_stream
    dataset: str = "fer2013"             # fer2013 | ck+
    data_dir: str = "../shared/data"     # holds fer2013/ and ck+48/
    labels: str | None = None            # blendshape label file (bsviz label) for the dataset
    out_dir: str = "runs/train"
    cache_dir: str = "runs/cache"        # decoded images, shared by runs on the same data
    fold: int = 0                        # CK+: which subject-independent fold is the test set
    n_folds: int = 10
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    blendshape_loss_weight: float = 1.0  # two-stream: weight of the auxiliary L2 loss
    init_image: str | None = None        # checkpoints to start the streams from
    init_blendshape: str | None = None
    freeze_epochs: int = 3               # two-stream: epochs training only the fusion layer
    finetune_lr: float = 3e-4            # two-stream: learning rate once unfrozen
    augment: bool = True
    widths: tuple[int, ...] = (32, 32, 64, 64, 128, 128, 256)
    feature_dim: int = 256
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda
    amp: str = "auto"                    # auto | bf16 | off
    resume: bool = False
    progress: bool = True
    limit: int | None = None             # use only this many training images, classes in proportion

    def __post_init__(self) -> None:
        self.widths = tuple(self.widths)
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.dataset not in ("fer2013", "ck+"):
            raise ValueError(f"dataset must be 'fer2013' or 'ck+', got {self.dataset!r}")


# --------------------------------------------------------------------------- data


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
    from bsviz import data as datasets
    from bsviz.labels import load_labels
    from bsviz.rig import load_rig, mirror_permutation

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
        weights = labels.weights[rows]
    elif cfg.kind == "image":
        weights = np.full((len(ds), len(names)), np.nan, np.float32)
    else:
        raise ValueError(f"a {cfg.kind} model needs blendshape labels: pass labels=FILE "
                         f"(made by `bsviz label --data-dir {root}`)")
    Path(cfg.cache_dir).mkdir(parents=True, exist_ok=True)
    keep = np.concatenate(parts)
    images = datasets.load_images([ds.paths[i] for i in keep], cache_dir=cfg.cache_dir)
    where = {i: j for j, i in enumerate(keep)}

    def split(idx: np.ndarray) -> Split:
        j = np.array([where[i] for i in idx], dtype=np.int64)
        return Split(torch.from_numpy(images[j]), torch.from_numpy(ds.labels[idx]),
                     torch.from_numpy(np.asarray(weights[idx], np.float32)))

    return Data(*(split(p) for p in parts), ds.classes, names, mirror_permutation(names))


def augment(images: torch.Tensor, weights: torch.Tensor, mirror: list[int],
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips (mirroring the weights), rotation +-10 deg, scale +-10 %, shift +-8 %,
    brightness and contrast. Geometry and lighting leave the expression unchanged."""
    b = len(images)
    flip = torch.rand(b, generator=gen) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    weights = torch.where(flip[:, None], weights[:, mirror], weights)
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(b, generator=gen) * 2 - 1) * 0.1
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * 0.08
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    contrast = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * 0.3
    brightness = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * 0.1
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * contrast + mean + brightness).clamp(0, 1), weights


# --------------------------------------------------------------------------- models


def build_model(cfg: TrainConfig, classes: tuple[str, ...], n_shapes: int) -> torch.nn.Module:
    """The network ``cfg.kind`` names, its streams initialised from ``cfg.init_*`` if given."""
    size = {"widths": cfg.widths, "feature_dim": cfg.feature_dim}
    image_cfg = image_stream_config(len(classes), **size)
    blendshape_cfg = blendshape_stream_config(n_shapes, **size)
    if cfg.kind == "image":
        model = Stream(image_cfg)
        streams = {"image": model}
    elif cfg.kind == "blendshape":
        model = Stream(blendshape_cfg)
        streams = {"blendshape": model}
    else:
        model = BlendshapeFERNet(TwoStreamConfig(image_cfg, blendshape_cfg, len(classes)))
        streams = {"image": model.image, "blendshape": model.blendshape}
    for name, stream in streams.items():
        path = cfg.init_image if name == "image" else cfg.init_blendshape
        if path:
            _init_stream(stream, name, load_checkpoint(path), classes)
    return model


def _init_stream(stream: Stream, name: str, checkpoint: dict, classes: tuple[str, ...]) -> None:
    """Load a pretrained stream (from a stream or a two-stream checkpoint). A classifier
    trained on another class list keeps only its features: its last layer starts anew."""
    state = checkpoint["model"]
    if checkpoint["kind"] == "two_stream":
        state = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
    if name == "image" and tuple(checkpoint["classes"]) != tuple(classes):
        state = {k: v for k, v in state.items() if not k.startswith("fc2.")}
    stream.load_state_dict(state, strict=False)


def model_from_checkpoint(checkpoint: dict) -> torch.nn.Module:
    """Rebuild the saved network (in eval mode) from a checkpoint dict."""
    config = checkpoint["model_config"]
    if checkpoint["kind"] == "two_stream":
        model = BlendshapeFERNet(TwoStreamConfig(**config))
    else:
        model = Stream(StreamConfig(**config))
    model.load_state_dict(checkpoint["model"])
    return model.eval()


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    """``torch.save`` through a temp file and a rename: a checkpoint is whole or absent."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict, loaded with ``weights_only=True`` (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises many kinds for a bad file)
        raise ValueError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None


def pack_checkpoint(src: str | Path, dst: str | Path, card: dict | None = None) -> Path:
    """A small release copy of a checkpoint: the weights in float16, config, classes and
    shape names, the model ``card`` (data, protocol, accuracy, date, command); no optimizer."""
    checkpoint = load_checkpoint(src)
    keep = {k: checkpoint[k] for k in ("kind", "config", "model_config", "classes",
                                       "shape_names", "epoch", "history")}
    keep["model"] = {k: v.half() if v.is_floating_point() else v
                     for k, v in checkpoint["model"].items()}
    keep["card"] = card or {}
    save_checkpoint(Path(dst), keep)
    return Path(dst)


# --------------------------------------------------------------------------- training


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


def _losses(cfg: TrainConfig, out, labels, weights):
    """(total loss, logits or None, regressed weights or None) for one batch."""
    mask = ~torch.isnan(weights).any(dim=1)
    if cfg.kind == "image":
        return expression_loss(out.output.float(), labels, cfg.label_smoothing), out.output, None
    if cfg.kind == "blendshape":
        return blendshape_loss(out.output.float(), weights, mask), None, out.output
    loss = (expression_loss(out.logits.float(), labels, cfg.label_smoothing)
            + cfg.blendshape_loss_weight * blendshape_loss(out.weights.float(), weights, mask))
    return loss, out.logits, out.weights


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Split, cfg: TrainConfig,
             mirror: list[int] | None = None, batch_size: int = 512) -> Metrics:
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
        loss, scores, weights = _losses(cfg, out, y, w)
        if mirror is not None:
            with _autocast(cfg, device):
                out = model(x.flip(3).contiguous(memory_format=torch.channels_last))
            _, flipped_scores, flipped_weights = _losses(cfg, out, y, w)
            if scores is not None:
                scores = scores.float().softmax(1) + flipped_scores.float().softmax(1)
            if weights is not None:
                weights = (weights.float() + flipped_weights.float()[:, mirror]) / 2
        total += loss.item() * len(y)
        if scores is not None:
            preds.append(scores.argmax(dim=1).cpu())
        if weights is not None:
            mask = ~torch.isnan(w).any(dim=1)
            errors += (weights.float()[mask] - w[mask]).abs().mean(dim=1).sum().item()
            labelled += int(mask.sum())
    pred = torch.cat(preds).numpy() if preds else None
    accuracy = float((pred == split.labels.numpy()).mean()) if pred is not None else None
    return Metrics(total / max(len(split), 1), accuracy,
                   errors / labelled if labelled else None, pred)


def _lr_at(cfg: TrainConfig, epoch_float: float) -> float:
    """Linear warm-up then cosine decay; the two-stream run switches to ``finetune_lr``
    when its streams are unfrozen."""
    base = cfg.lr
    if cfg.kind == "two_stream" and epoch_float >= cfg.freeze_epochs:
        base = cfg.finetune_lr
    if epoch_float < cfg.warmup_epochs:
        return base * (epoch_float + 1e-3) / cfg.warmup_epochs
    progress = (epoch_float - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    return base * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: weight decay on weights, none on biases and norms; in the two-stream
    network the streams' groups are marked ``stream`` (frozen in the first epochs)."""
    groups = []
    for stream in (True, False):
        named = [(n, p) for n, p in model.named_parameters()
                 if (cfg.kind != "two_stream" or not n.startswith("fusion")) == stream]
        for decay in (True, False):
            params = [p for n, p in named if (p.ndim > 1) == decay]
            if params:
                groups.append({"params": params, "stream": stream,
                               "weight_decay": cfg.weight_decay if decay else 0.0})
    return groups


def _frozen(cfg: TrainConfig, epoch: int) -> bool:
    """Two-stream: the streams stay as pretrained (learning rate 0, BatchNorm statistics
    kept) while the fusion layer learns."""
    return cfg.kind == "two_stream" and epoch < cfg.freeze_epochs


def _score(kind: str, m: Metrics) -> float:
    """Higher is better: validation accuracy, or minus the weight MAE for the regressor."""
    return -m.mae if kind == "blendshape" else m.accuracy


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
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    lead = rank == 0
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train(cfg, device, rank, world, lead, out_dir, on_epoch)
    finally:
        if distributed:
            dist.destroy_process_group()


def _train(cfg, device, rank, world, lead, out_dir, on_epoch) -> dict:
    data = load_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.classes, len(data.shape_names))
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr)
    history, start_epoch, best = [], 0, -math.inf
    if cfg.resume and (out_dir / "last.pt").exists():
        checkpoint = load_checkpoint(out_dir / "last.pt")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        history, start_epoch, best = checkpoint["history"], checkpoint["epoch"] + 1, checkpoint["best"]
    net = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    meta = {"kind": cfg.kind, "config": asdict(cfg), "model_config": asdict(net.cfg),
            "classes": list(data.classes), "shape_names": list(data.shape_names)}
    n = len(data.train)
    steps = n // (cfg.batch_size * world) or 1
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout; same on resume
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(n, generator=gen)
        model.train()
        frozen = _frozen(cfg, epoch)
        if frozen:
            net.image.eval()
            net.blendshape.eval()
        started, seen, loss_sum = time.time(), 0, 0.0
        bar = tqdm(range(steps), desc=f"{cfg.kind} epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and lead), leave=False)
        for step in bar:
            batch = order[(step * world + rank) * cfg.batch_size:][:cfg.batch_size]
            x, y, w = data.train.images[batch], data.train.labels[batch], data.train.weights[batch]
            if cfg.augment:
                x, w = augment(x, w, data.mirror, gen)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            y, w = y.to(device), w.to(device)
            lr = _lr_at(cfg, epoch + step / steps)
            for group in optimizer.param_groups:
                group["lr"] = 0.0 if frozen and group["stream"] else lr
            with _autocast(cfg, device):
                out = model(x)
            loss, _, _ = _losses(cfg, out, y, w)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        val = evaluate(net, data.val, cfg)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "val_loss": val.loss,
               "val_accuracy": val.accuracy, "val_mae": val.mae,
               "lr": _lr_at(cfg, epoch + 1 - 1e-9), "seconds": time.time() - started,
               "images_per_s": seen * world / (time.time() - started)}
        history.append(row)
        if lead:
            score = _score(cfg.kind, val)
            checkpoint = {**meta, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                          "epoch": epoch, "history": history, "best": max(best, score)}
            if score > best:
                best = score
                save_checkpoint(out_dir / "best.pt", checkpoint)
            save_checkpoint(out_dir / "last.pt", checkpoint)
            _log(out_dir, history)
            if cfg.progress:
                tqdm.write(_describe(row))
            if on_epoch is not None:
                on_epoch(history)
    result = {"config": asdict(cfg), "classes": list(data.classes), "history": history}
    if lead:
        result.update(_final_test(cfg, net, data, out_dir))
    return result


def _final_test(cfg, net, data, out_dir) -> dict:
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
    from bsviz.evaluate import plot_run  # matplotlib, only when a run ends

    plot_run(out_dir, best["history"], result.get("confusion"), list(data.classes))
    return result


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int counts: row = true class, column = predicted class."""
    return np.bincount(truth * n_classes + predicted, minlength=n_classes**2).reshape(
        n_classes, n_classes)


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

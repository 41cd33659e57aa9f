"""Which blendshapes drive each predicted expression: three views of a trained BlendshapeFERNet.

BlendshapeFERNet's fusion layer reads the blendshape stream's first-FC features F_bs, not the
weights that stream regresses, so there is no gradient of a class logit with respect to the
weights. Three sound substitutes, each answering a narrower question:

``class_profiles``
    per class, the mean regressed weights of the correctly classified faces minus the mean over
    all faces: what the blendshape stream *sees* in the faces the network gets right. Descriptive
    (a correlation over the data), not a statement about what the classifier uses.
``stream_ablation``
    the fusion is linear, logits = W_img F_img + W_bs F_bs + b, so replacing F_bs by reference
    features (the mean over neutral faces, or over all faces) and measuring the drop of the
    predicted class's probability says how much each class's decisions *rely on the blendshape
    stream* (and likewise for the image stream). It says which stream, not which shapes.
``linear_probe``
    a multinomial logistic regression from the regressed weights to the network's predicted
    classes. Its coefficients (per standard deviation of each weight) say which shapes *linearly
    separate* the predicted classes; ``Probe.agreement`` says how faithful that surrogate is.
    It explains the probe, and explains the network only as far as they agree.

Scores are (C, K) arrays, one row per class, one column per shape, so ``score_bars`` and
``top_shape_weights`` (the rig posed with each class's top shapes) serve all three.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from bsviz.fer.models import BlendshapeFERNet
from bsviz.rig.blend import blend
from bsviz.rig.rig import Rig


@dataclass
class Outputs:
    """What a BlendshapeFERNet computes for N faces (eval mode).

    logits : (N, C) fused class logits O_con; probabilities : (N, C) their softmax
    weights : (N, K) regressed blendshape weights in [0, 1]
    image_features : (N, Di) F_img; blendshape_features : (N, Db) F_bs (first-FC, after ReLU)
    """

    logits: np.ndarray
    probabilities: np.ndarray
    weights: np.ndarray
    image_features: np.ndarray
    blendshape_features: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        """(N,) int the predicted class of each face."""
        return self.logits.argmax(axis=1)


@torch.no_grad()
def two_stream_outputs(model: BlendshapeFERNet, images: np.ndarray | torch.Tensor,
                       batch_size: int = 512) -> Outputs:
    """Run ``model`` (put in eval mode, float32, on its device) on images (N, 1, H, W) in [0, 1]."""
    if not isinstance(model, BlendshapeFERNet):
        raise TypeError(f"expected a two-stream BlendshapeFERNet, got {type(model).__name__}")
    model = model.float().eval()
    device = next(model.parameters()).device
    images = torch.as_tensor(np.asarray(images, np.float32))
    parts: dict[str, list[torch.Tensor]] = {"img": [], "bs": [], "w": []}
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        img, bs = model.image(x), model.blendshape(x)
        parts["img"].append(img.features.cpu())
        parts["bs"].append(bs.features.cpu())
        parts["w"].append(bs.weights.cpu())
    img, bs = torch.cat(parts["img"]), torch.cat(parts["bs"])
    logits = fusion_logits(model, img, bs)
    return Outputs(logits, _softmax(logits), torch.cat(parts["w"]).numpy(), img.numpy(),
                   bs.numpy())


@torch.no_grad()
def fusion_logits(model: BlendshapeFERNet, image_features: np.ndarray | torch.Tensor,
                  blendshape_features: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N, C) the fusion layer's logits for given features, O_con = h_con([F_img, F_bs])."""
    fusion = model.fusion.float()
    device = fusion.weight.device
    # torch.tensor copies: the inputs may be read-only views (np.broadcast_to)
    fused = torch.cat([torch.tensor(np.asarray(image_features, np.float32)),
                       torch.tensor(np.asarray(blendshape_features, np.float32))], dim=1)
    return fusion(fused.to(device)).cpu().numpy()  # eval: the fusion dropout is off


def _softmax(logits: np.ndarray) -> np.ndarray:
    return F.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).numpy()


# --------------------------------------------------------------------------- (a) profiles


def class_profiles(weights: np.ndarray, predicted: np.ndarray, truth: np.ndarray,
                   n_classes: int) -> np.ndarray:
    """(C, K) per class c: mean weights of the faces of class c classified correctly, minus the
    mean weights of all N faces; a row of NaN where class c has no correct face.

    weights : (N, K) regressed weights; predicted, truth : (N,) int classes
    """
    weights, predicted, truth = np.asarray(weights, np.float64), np.asarray(predicted), \
        np.asarray(truth)
    overall = weights.mean(axis=0)
    out = np.full((n_classes, weights.shape[1]), np.nan)
    for c in range(n_classes):
        rows = (truth == c) & (predicted == c)
        if rows.any():
            out[c] = weights[rows].mean(axis=0) - overall
    return out


# --------------------------------------------------------------------------- (b) ablation


@dataclass
class Ablation:
    """Per predicted class (C,): how many faces (``n``); the mean drop of the predicted class's
    probability when the blendshape stream's features (``blendshape_drop``) or the image
    stream's (``image_drop``) are replaced by the reference; and the fraction of those faces
    whose predicted class then changes (``blendshape_flips``, ``image_flips``). NaN where n = 0.
    """

    n: np.ndarray
    blendshape_drop: np.ndarray
    image_drop: np.ndarray
    blendshape_flips: np.ndarray
    image_flips: np.ndarray


def stream_ablation(model: BlendshapeFERNet, outputs: Outputs,
                    reference: np.ndarray) -> Ablation:
    """Replace one stream's features by their mean over the ``reference`` faces (a boolean mask
    or indices into ``outputs``, e.g. the neutral faces) and see what the predictions lose.

    Because the fusion is linear, the logit change is exactly W_bs (F_bs_ref - F_bs): the
    blendshape stream's contribution relative to the reference face.
    """
    reference = np.asarray(reference)
    if reference.dtype == bool:
        reference = np.flatnonzero(reference)
    if len(reference) == 0:
        raise ValueError("the reference set of faces is empty")
    predicted = outputs.predicted
    rows = np.arange(len(predicted))
    p = outputs.probabilities[rows, predicted]
    n_classes = outputs.logits.shape[1]
    result = {"n": np.bincount(predicted, minlength=n_classes).astype(float)}
    for stream in ("blendshape", "image"):
        img, bs = outputs.image_features, outputs.blendshape_features
        if stream == "blendshape":
            bs = np.broadcast_to(bs[reference].mean(axis=0), bs.shape)
        else:
            img = np.broadcast_to(img[reference].mean(axis=0), img.shape)
        logits = fusion_logits(model, img, bs)
        drop = p - _softmax(logits)[rows, predicted]
        flips = (logits.argmax(axis=1) != predicted).astype(float)
        result[f"{stream}_drop"] = _per_class(drop, predicted, n_classes)
        result[f"{stream}_flips"] = _per_class(flips, predicted, n_classes)
    return Ablation(**result)


def _per_class(values: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) the mean of ``values`` over the rows of each class, NaN for an empty class."""
    total = np.bincount(classes, weights=values, minlength=n_classes)
    count = np.bincount(classes, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def mean_by_class(values: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, K) the mean of ``values`` (N, K) over the rows of each class (e.g. the mean regressed
    weights of the faces predicted as each class); a row of NaN for a class with no rows."""
    values, classes = np.asarray(values, np.float64), np.asarray(classes)
    return np.stack([values[classes == c].mean(axis=0) if (classes == c).any()
                     else np.full(values.shape[1], np.nan) for c in range(n_classes)])


# --------------------------------------------------------------------------- (c) probe


@dataclass
class Probe:
    """A multinomial logistic regression on standardised weights, z = coef @ (w - mean) / std + b.

    coef : (C, K) logit change per standard deviation of each weight (softmax leaves a common
        shift across classes free; the L2 penalty picks coefficients that sum to ~0 over classes,
        so each row reads relative to the average class)
    intercept : (C,); mean, std : (K,) of the weights it was fitted on
    """

    coef: np.ndarray
    intercept: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """(N,) int the probe's class for weights (N, K)."""
        z = (np.asarray(weights, np.float64) - self.mean) / self.std @ self.coef.T
        return (z + self.intercept).argmax(axis=1)

    def agreement(self, weights: np.ndarray, targets: np.ndarray) -> float:
        """Fraction of faces where the probe gives the same class as ``targets`` (its fidelity
        to the network, when ``targets`` are the network's predictions)."""
        return float((self.predict(weights) == np.asarray(targets)).mean())


def linear_probe(weights: np.ndarray, targets: np.ndarray, n_classes: int,
                 l2: float = 1e-2) -> Probe:
    """Fit a ``Probe`` (L-BFGS, penalty ``l2`` * |coef|^2) from weights (N, K) to targets (N,)."""
    w = np.asarray(weights, np.float64)
    mean, std = w.mean(axis=0), w.std(axis=0) + 1e-3  # a constant shape gets a ~0 coefficient
    x = torch.as_tensor((w - mean) / std)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    layer = torch.nn.Linear(x.shape[1], n_classes, dtype=torch.float64)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=500,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(x), y) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return Probe(layer.weight.detach().numpy(), layer.bias.detach().numpy(), mean, std)


# --------------------------------------------------------------------------- showing scores


def top_shapes(scores: np.ndarray, names: Sequence[str], k: int = 5) -> list[list[tuple]]:
    """Per class (row of ``scores`` (C, K)), its ``k`` highest positive (name, score) pairs:
    the shapes that speak for the class (fewer where fewer are positive; none for a NaN row)."""
    scores = np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf)
    return [[(names[j], float(row[j])) for j in np.argsort(-row)[:k] if row[j] > 0]
            for row in scores]


def top_shape_weights(scores: np.ndarray, base: np.ndarray, k: int = 5,
                      normalise: bool = True) -> np.ndarray:
    """(C, K) weights to pose the rig with: per class, ``base`` (the class's mean regressed
    weights, (C, K) or (K,)) kept only on its ``k`` highest positive scores, 0 elsewhere; with
    ``normalise`` scaled so the largest kept weight is 1 (a caricature that is easy to see)."""
    scores = np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf)
    base = np.nan_to_num(np.broadcast_to(np.asarray(base, np.float64), scores.shape))
    out = np.zeros(scores.shape)
    for c, row in enumerate(scores):
        keep = [j for j in np.argsort(-row)[:k] if row[j] > 0]
        out[c, keep] = np.clip(base[c, keep], 0, 1)
        if normalise and out[c].max() > 0:
            out[c] /= out[c].max()
    return out.astype(np.float32)


def score_bars(scores: np.ndarray, classes: Sequence[str], names: Sequence[str], k: int = 6,
               title: str = "", xlabel: str = "score") -> Figure:
    """A panel per class: its ``k`` highest and ``k`` lowest scoring shapes as horizontal bars."""
    scores = np.asarray(scores, np.float64)
    cols = min(4, len(classes))
    rows = -(-len(classes) // cols)
    fig = Figure(figsize=(3.4 * cols, 0.26 * 2 * k * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name, row in zip(axes, classes, scores):
        ax.set_title(name, fontsize=10)
        if not np.isfinite(row).any():
            ax.text(0.5, 0.5, "no faces", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        order = np.argsort(np.nan_to_num(row, nan=0.0))
        pick = np.unique(np.concatenate([order[:k], order[-k:]]))
        pick = pick[np.argsort(row[pick])]
        ax.barh(range(len(pick)), row[pick],
                color=["tab:red" if v > 0 else "tab:blue" for v in row[pick]])
        ax.set_yticks(range(len(pick)), [names[j] for j in pick], fontsize=7)
        ax.axvline(0, color="k", lw=0.5)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel(xlabel, fontsize=8)
    for ax in axes[len(classes):]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


FACE_BOX = (0.21, 0.71, 0.25, 0.75)  # top, bottom, left, right of the face in a front render


def render_poses(rig: Rig, weights: np.ndarray, size: int = 384,
                 crop: bool = True) -> list[np.ndarray]:
    """uint8 RGB front renders of the rig posed with each row of ``weights`` (C, K): (size, size,
    3), or with ``crop`` only the face from brows to chin (``FACE_BOX``), where expressions show."""
    from bsviz.rig.render import Renderer  # OpenGL only when rendering

    top, bottom, left, right = (round(f * size) for f in FACE_BOX) if crop else (0, size, 0, size)
    with Renderer(rig, size) as renderer:
        return [renderer.render(blend(rig, np.clip(np.nan_to_num(w), 0, 1)))[top:bottom, left:right]
                for w in weights]


def ablation_bars(ablation: Ablation, classes: Sequence[str]) -> Figure:
    """Per predicted class: the mean probability drop and the share of changed predictions when
    each stream's features are replaced by the reference (``stream_ablation``)."""
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    x = np.arange(len(classes))
    labels = [f"{c}\n(n={int(n)})" for c, n in zip(classes, ablation.n)]
    for ax, (what, bs, img) in zip(fig.subplots(1, 2), (
            ("drop of the predicted class's probability", ablation.blendshape_drop,
             ablation.image_drop),
            ("share of predictions that change", ablation.blendshape_flips,
             ablation.image_flips))):
        ax.bar(x - 0.2, np.nan_to_num(bs), 0.4, label="blendshape stream replaced")
        ax.bar(x + 0.2, np.nan_to_num(img), 0.4, label="image stream replaced")
        ax.set_xticks(x, labels, fontsize=8)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(what, fontsize=10)
    fig.axes[0].legend(fontsize=8)
    return fig


def image_row(images: Sequence[np.ndarray], titles: Sequence[str], size: float = 1.8,
              title: str = "") -> Figure:
    """A row of images (rendered faces (H, W, 3) or gray (H, W)) with a title over each."""
    fig = Figure(figsize=(size * len(images), size + 0.5), layout="constrained")
    for ax, image, text in zip(fig.subplots(1, len(images), squeeze=False)[0], images, titles):
        ax.imshow(image, cmap="gray" if np.ndim(image) == 2 else None)
        ax.set_title(text, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig

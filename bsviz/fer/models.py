"""BlendshapeFERNet and its two streams (Wang et al. 2020, eqs. 2-8).

Each stream is 7 convolutions and 2 fully connected layers:
    image stream       O_img = h_img2(h_img1(c_img(I)))   softmax + cross-entropy (eq. 2-3)
    blendshape stream  O_bs  = h_bs2(h_bs1(c_bs(I)))      sigmoid, L2 on the weights (eq. 4-5)
The two-stream network concatenates the first-FC features F_img = h_img1(c_img(I)) and
F_bs = h_bs1(c_bs(I)) and classifies them with one more FC layer (eq. 6-8).

Our choices where the paper is silent: 3x3 convolutions with BatchNorm and ReLU,
2x2 max-pooling after convolutions 1, 3, 5 and 7 (48 -> 24 -> 12 -> 6 -> 3), dropout before
the second FC layer, and a sigmoid on the blendshape output to keep weights in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bsviz.fer.config import KINDS


@dataclass
class StreamConfig:
    """One stream: 7 conv layers (``widths``), FC to ``feature_dim``, FC to ``n_outputs``."""

    n_outputs: int = 7
    in_channels: int = 1
    image_size: int = 48
    widths: tuple[int, ...] = (32, 32, 64, 64, 128, 128, 256)
    pool_after: tuple[int, ...] = (0, 1, 3, 5)  # 0-based conv indices followed by 2x2 max-pool
    feature_dim: int = 256
    dropout: float = 0.4
    output: str = "logits"  # "logits" (classification) or "sigmoid" (weights in [0, 1])

    def __post_init__(self) -> None:
        self.widths, self.pool_after = tuple(self.widths), tuple(self.pool_after)
        if len(self.widths) != 7:
            raise ValueError(f"a stream has 7 convolution layers, got {len(self.widths)} widths")
        if self.output not in ("logits", "sigmoid"):
            raise ValueError(f"output must be 'logits' or 'sigmoid', got {self.output!r}")


def image_stream_config(n_classes: int = 7, **overrides) -> StreamConfig:
    """The image FER stream: class logits."""
    return StreamConfig(n_outputs=n_classes, output="logits", **overrides)


def blendshape_stream_config(n_shapes: int = 53, **overrides) -> StreamConfig:
    """The blendshape regression stream: ``n_shapes`` weights in [0, 1]."""
    return StreamConfig(n_outputs=n_shapes, output="sigmoid", dropout=0.2, **overrides)


@dataclass
class TwoStreamConfig:
    """BlendshapeFERNet: two streams and a fusion FC over their concatenated features."""

    image: StreamConfig = field(default_factory=image_stream_config)
    blendshape: StreamConfig = field(default_factory=blendshape_stream_config)
    n_classes: int = 7
    fusion_dropout: float = 0.4

    def __post_init__(self) -> None:
        if isinstance(self.image, dict):
            self.image = StreamConfig(**self.image)
        if isinstance(self.blendshape, dict):
            self.blendshape = StreamConfig(**self.blendshape)


@dataclass
class Output:
    """What a network gives for a batch of B images.

    logits : (B, C) class logits (None for the blendshape stream)
    weights : (B, K) blendshape weights in [0, 1] (None for the image stream)
    features : (B, D) first-FC features F of a single stream (None for the two-stream network)
    """

    logits: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    features: torch.Tensor | None = None


class Stream(nn.Module):
    """7 conv (+BN, ReLU, pooling) -> FC h1 (features) -> dropout -> FC h2 (logits or weights)."""

    def __init__(self, cfg: StreamConfig):
        super().__init__()
        self.cfg = cfg
        self.kind = "image" if cfg.output == "logits" else "blendshape"
        layers, channels, size = [], cfg.in_channels, cfg.image_size
        for i, width in enumerate(cfg.widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            if i in cfg.pool_after:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            channels = width
        self.conv = nn.Sequential(*layers)                        # c(I)
        self.fc1 = nn.Linear(channels * size * size, cfg.feature_dim)  # h1
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc2 = nn.Linear(cfg.feature_dim, cfg.n_outputs)     # h2

    def forward(self, images: torch.Tensor) -> Output:
        """images: (B, C, H, W) float in [0, 1] -> features F (B, D), logits or weights (B, n)."""
        features = F.relu(self.fc1(self.conv(images).flatten(1)))
        output = self.fc2(self.dropout(features))
        if self.kind == "blendshape":
            return Output(weights=torch.sigmoid(output), features=features)
        return Output(logits=output, features=features)

    def streams(self) -> dict[str, Stream]:
        """The streams inside, by kind: this one."""
        return {self.kind: self}

    def pretrained(self) -> tuple[nn.Module, ...]:
        """The parts that start from trained weights and are held still at first: none."""
        return ()


class BlendshapeFERNet(nn.Module):
    """The two-stream network: O_con = h_con([F_img, F_bs]) (eqs. 6-7)."""

    kind = "two_stream"

    def __init__(self, cfg: TwoStreamConfig):
        super().__init__()
        self.cfg = cfg
        self.image = Stream(cfg.image)
        self.blendshape = Stream(cfg.blendshape)
        self.dropout = nn.Dropout(cfg.fusion_dropout)
        self.fusion = nn.Linear(cfg.image.feature_dim + cfg.blendshape.feature_dim, cfg.n_classes)

    def forward(self, images: torch.Tensor) -> Output:
        """images: (B, 1, H, W) in [0, 1] -> fused logits O_con (B, C), regressed weights (B, K)."""
        img, bs = self.image(images), self.blendshape(images)
        fused = torch.cat([img.features, bs.features], dim=1)   # F_con = [F_img, F_bs]
        return Output(logits=self.fusion(self.dropout(fused)), weights=bs.weights)

    def streams(self) -> dict[str, Stream]:
        """The two streams, by kind."""
        return {"image": self.image, "blendshape": self.blendshape}

    def pretrained(self) -> tuple[nn.Module, ...]:
        """The streams: initialised from their own training runs, held still (learning rate 0,
        BatchNorm statistics kept) while the new fusion layer learns, then fine-tuned."""
        return (self.image, self.blendshape)


Network = Stream | BlendshapeFERNet


def build_network(kind: str, n_classes: int = 7, n_shapes: int = 53, **size) -> Network:
    """A new network of ``kind`` (image | blendshape | two_stream); ``size`` sets each stream's
    ``widths``, ``pool_after`` and ``feature_dim``."""
    image = image_stream_config(n_classes, **size)
    blendshape = blendshape_stream_config(n_shapes, **size)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "two_stream":
        return BlendshapeFERNet(TwoStreamConfig(image, blendshape, n_classes))
    return Stream(image if kind == "image" else blendshape)


def network_from_config(kind: str, config: dict) -> Network:
    """The network a checkpoint describes (its ``kind`` and ``model_config``), untrained."""
    if kind == "two_stream":
        return BlendshapeFERNet(TwoStreamConfig(**config))
    return Stream(StreamConfig(**config))


def expression_loss(logits: torch.Tensor, labels: torch.Tensor,
                    label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy (eqs. 3 and 8): -1/n sum_i log softmax(z_i)[label_i].

    ``label_smoothing`` > 0 (our addition) mixes that much of a uniform target into D*.
    """
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def blendshape_loss(predicted: torch.Tensor, target: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """(1/2n) sum_i ||o_i - g_i||^2 (eq. 5) over the n images with a label (``mask``, (B,) bool).

    Images with no blendshape label (no face found) are left out; with none labelled the
    loss is 0 (and still part of the graph).
    """
    if mask is None:
        mask = torch.ones(len(predicted), dtype=torch.bool, device=predicted.device)
    n = mask.sum()
    squared = ((predicted - torch.nan_to_num(target)) ** 2).sum(dim=1)
    return (squared * mask).sum() / (2 * n.clamp(min=1))


def training_loss(out: Output, labels: torch.Tensor, weights: torch.Tensor,
                  label_smoothing: float = 0.0, blendshape_weight: float = 1.0) -> torch.Tensor:
    """The loss of any network: cross-entropy on its logits (if it classifies) plus
    ``blendshape_weight`` x the L2 loss on its weights (if it regresses), over the images whose
    blendshape label is known (``weights`` (B, K) has NaN rows for the others)."""
    loss = torch.zeros((), device=labels.device)
    if out.logits is not None:
        loss = loss + expression_loss(out.logits.float(), labels, label_smoothing)
    if out.weights is not None:
        known = ~torch.isnan(weights).any(dim=1)
        loss = loss + blendshape_weight * blendshape_loss(out.weights.float(), weights, known)
    return loss

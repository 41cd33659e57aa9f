"""A trained network's forward pass in numpy, for inference without torch.

``NumpyNet(read_checkpoint(path))`` computes what ``models.Stream`` / ``BlendshapeFERNet`` in
eval mode compute (tests/test_numpy_net.py: equal to torch within 1e-5): each BatchNorm is
folded into its convolution, each 3x3 convolution is one matrix product over the image's
3x3 patches (im2col), dropout is the identity. On a 2-core CPU a face and its mirror image
take 10 ms on one thread, 5.6 ms on two (torch: about 11), and batches of hundreds about twice
torch's time; it spares ``bsviz predict`` torch's import (3.4 s of a cold start there).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BATCH = 32  # images per pass: 64 images in two passes took 0.82x the time of one pass
BN_EPS = 1e-5  # torch.nn.BatchNorm2d's


def _f32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, np.float32)


class NumpyStream:
    """One stream's layers as arrays: convolutions (9C, O) with BatchNorm folded in, and the
    two fully connected layers, from a state dict whose keys start with ``prefix``."""

    def __init__(self, state: dict[str, np.ndarray], config: dict, prefix: str = ""):
        self.output = config["output"]
        self.convs, j = [], 0  # j: the index in the torch Sequential (conv, bn, relu[, pool])
        for i in range(len(config["widths"])):
            weight = _f32(state[f"{prefix}conv.{j}.weight"])           # (O, C, 3, 3)
            bn = {k: _f32(state[f"{prefix}conv.{j + 1}.{k}"])
                  for k in ("weight", "bias", "running_mean", "running_var")}
            scale = bn["weight"] / np.sqrt(bn["running_var"] + BN_EPS)
            kernel = (weight * scale[:, None, None, None]).transpose(2, 3, 1, 0)  # (3, 3, C, O)
            self.convs.append((np.ascontiguousarray(kernel.reshape(-1, len(weight))),
                               bn["bias"] - bn["running_mean"] * scale, i in config["pool_after"]))
            j += 3 + (i in config["pool_after"])
        self.fc1 = (_f32(state[prefix + "fc1.weight"]).T.copy(), _f32(state[prefix + "fc1.bias"]))
        self.fc2 = (_f32(state[prefix + "fc2.weight"]).T.copy(), _f32(state[prefix + "fc2.bias"]))

    def features(self, images: np.ndarray) -> np.ndarray:
        """images (N, H, W, C) float32 in [0, 1] -> first-FC features F (N, D)."""
        x = images
        for kernel, bias, pool in self.convs:
            n, h, w, c = x.shape
            padded = np.zeros((n, h + 2, w + 2, c), np.float32)
            padded[:, 1:-1, 1:-1] = x
            patches = sliding_window_view(padded, (3, 3), axis=(1, 2))  # (n, h, w, c, 3, 3)
            y = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 9 * c) @ kernel
            y += bias
            x = np.maximum(y, 0, out=y).reshape(n, h, w, kernel.shape[1])
            if pool:  # 2x2 max-pooling
                x = np.maximum(np.maximum(x[:, ::2, ::2], x[:, 1::2, ::2]),
                               np.maximum(x[:, ::2, 1::2], x[:, 1::2, 1::2]))
        flat = x.transpose(0, 3, 1, 2).reshape(len(x), self.fc1[0].shape[0])  # torch's CHW
        return np.maximum(flat @ self.fc1[0] + self.fc1[1], 0)

    def head(self, features: np.ndarray) -> np.ndarray:
        """Features (N, D) -> logits, or weights in [0, 1] for a blendshape stream (N, n)."""
        out = features @ self.fc2[0] + self.fc2[1]
        return 1 / (1 + np.exp(-out)) if self.output == "sigmoid" else out


class NumpyNet:
    """A checkpoint's network (image, blendshape or two-stream) in numpy.

    ``net(images (N, H, W) or (N, H, W, C) float in [0, 1])`` -> (logits (N, C) or None,
    weights (N, K) in [0, 1] or None), as the torch network gives them in eval mode.
    """

    def __init__(self, checkpoint: dict):
        state, config = checkpoint["model"], checkpoint["model_config"]
        self.kind = checkpoint["kind"]
        if self.kind == "two_stream":
            self.streams = {k: NumpyStream(state, config[k], k + ".")
                            for k in ("image", "blendshape")}
            self.fusion = (_f32(state["fusion.weight"]).T.copy(), _f32(state["fusion.bias"]))
        else:
            self.streams = {self.kind: NumpyStream(state, config)}
        first = config["image"] if self.kind == "two_stream" else config
        self.image_size, self.in_channels = first["image_size"], first["in_channels"]

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        x = _f32(images)
        x = x[..., None] if x.ndim == 3 else x
        parts = [self._run(x[i:i + BATCH]) for i in range(0, max(len(x), 1), BATCH)]
        logits, weights = (None if p[0] is None else np.concatenate(p) for p in zip(*parts))
        return logits, weights

    def _run(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        features = {k: s.features(x) for k, s in self.streams.items()}
        weights = (self.streams["blendshape"].head(features["blendshape"])
                   if "blendshape" in features else None)
        if self.kind == "two_stream":
            fused = np.concatenate([features["image"], features["blendshape"]], 1)
            return fused @ self.fusion[0] + self.fusion[1], weights
        return (self.streams["image"].head(features["image"]) if "image" in features else None,
                weights)

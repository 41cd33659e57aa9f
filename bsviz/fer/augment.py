"""Training-time augmentation of face crops, with the blendshape labels kept consistent."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def augment(images: torch.Tensor, weights: torch.Tensor, mirror: list[int],
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips (mirroring the weights), rotation +-10 deg, scale +-10 %, shift +-8 %,
    brightness and contrast. Geometry and lighting leave the expression unchanged.

    images : (B, 1, H, W) float in [0, 1]; weights : (B, K) (NaN rows stay NaN)
    mirror : the weight permutation of a left-right flipped face (``rig.mirror_permutation``)
    """
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


def erase(images: torch.Tensor, chance: float, gen: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020): with probability ``chance`` per image, a rectangle of
    2-33 % of its area, aspect ratio 0.3-3.3, is filled with uniform noise.

    images : (B, 1, H, W) float in [0, 1] -> the same shape
    """
    b, _, h, w = images.shape
    area = (0.02 + torch.rand(b, generator=gen) * 0.31) * h * w
    aspect = torch.exp((torch.rand(b, generator=gen) * 2 - 1) * math.log(3.3))
    eh = (area * aspect).sqrt().clamp(1, h)
    ew = (area / aspect).sqrt().clamp(1, w)
    y0 = torch.rand(b, generator=gen) * (h - eh)
    x0 = torch.rand(b, generator=gen) * (w - ew)
    ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    inside = ((ys >= y0[:, None, None]) & (ys < (y0 + eh)[:, None, None])
              & (xs >= x0[:, None, None]) & (xs < (x0 + ew)[:, None, None]))
    inside &= (torch.rand(b, generator=gen) < chance)[:, None, None]
    noise = torch.rand(images.shape, generator=gen)
    return torch.where(inside[:, None], noise, images)


def mixup(images: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, n_classes: int,
          alpha: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018): each image blended with another of the batch,
    x = lam x_i + (1 - lam) x_j with one lam ~ Beta(alpha, alpha) per batch, and so are the
    class targets and the blendshape weights (a row stays NaN, unlabelled, if either was).

    images : (B, 1, H, W); labels : (B,) int; weights : (B, K)
    Returns images, soft class targets (B, n_classes) and weights.
    """
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    other = torch.randperm(len(images), generator=gen)
    targets = F.one_hot(labels, n_classes).float()
    mix = lambda t: lam * t + (1 - lam) * t[other]  # noqa: E731
    return mix(images), mix(targets), mix(weights)

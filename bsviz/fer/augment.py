"""Training-time augmentation of face crops, with the blendshape labels kept consistent."""

from __future__ import annotations

import math

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

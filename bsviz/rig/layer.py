"""The blendshape equation as a differentiable torch module (see ``blend`` for the numpy one)."""

from __future__ import annotations

import torch

from bsviz.rig.blend import WeightError, check_range, check_vertices
from bsviz.rig.rig import Rig


class BlendLayer(torch.nn.Module):
    """The blendshape equation as a torch module: rig arrays as buffers, weights as inputs.

    ``forward(weights (B, K), identity (B, J) | None) -> (B, V, 3)``; differentiable in both,
    on whatever device the module is moved to. Raises WeightError as ``blend`` does.
    """

    def __init__(self, rig: Rig, *, extrapolate: bool = False):
        super().__init__()
        self.names, self.identity_names = rig.names, rig.identity_names
        self.n_vertices = rig.n_vertices
        self.extrapolate = extrapolate
        # Not persistent: the rig is data, loaded from its own file, not a model checkpoint.
        self.register_buffer("basis", torch.from_numpy(rig.basis.copy()), persistent=False)

    def forward(self, weights: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
        k, j = len(self.names), len(self.identity_names)
        if weights.shape[-1] != k:
            raise WeightError(f"expression weights must have length {k} in their last axis, "
                              f"got shape {tuple(weights.shape)}")
        w = check_range(weights.to(self.basis.dtype), self.extrapolate, "expression")
        ones = torch.ones(w.shape[:-1] + (1,), dtype=w.dtype, device=w.device)
        columns = [w, ones]
        if identity is not None:
            if identity.shape[-1] != j:
                raise WeightError(f"identity weights must have length {j}, got {tuple(identity.shape)}")
            columns.append(check_range(identity.to(w.dtype), True, "identity").expand(
                w.shape[:-1] + (j,)))
        coeffs = torch.cat(columns, dim=-1)
        # T[b, v*3+c] = sum_k coeffs[b, k] * basis[k, v*3+c]  (see blend())
        out = (coeffs @ self.basis[: coeffs.shape[-1]]).reshape(w.shape[:-1] + (self.n_vertices, 3))
        check_vertices(out.detach())
        return out

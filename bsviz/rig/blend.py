"""The blendshape equation T = b0 + sum_i w_i d_i (+ identity), in numpy and torch.

Weights are given as a (..., K) array in the rig's name order or as a
``{name: value}`` dict (missing names are 0). Unknown names, a wrong length and
NaN/inf are errors; values outside [0, 1], the paper's range, are clamped with a
warning unless ``extrapolate=True``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from bsviz.rig import Rig

Weights = np.ndarray | Sequence[float] | Mapping[str, float]


class WeightError(ValueError):
    """Weights that cannot be applied to a rig (unknown name, wrong length, NaN)."""


class WeightRangeWarning(UserWarning):
    """Weights outside [0, 1] were clamped."""


def weight_vector(weights: Weights, names: Sequence[str], *, extrapolate: bool = False,
                  kind: str = "expression") -> np.ndarray:
    """Check weights against ``names`` and return them as a (..., K) float32 array.

    A dict gives 0 to the names it leaves out. Values outside [0, 1] are clamped
    (with a ``WeightRangeWarning``) unless ``extrapolate``.
    """
    if isinstance(weights, Mapping):
        index = {n: i for i, n in enumerate(names)}
        unknown = [k for k in weights if k not in index]
        if unknown:
            raise WeightError(f"unknown {kind} shape name(s): {', '.join(map(str, unknown[:5]))}"
                              f" (the rig has {len(names)}: {', '.join(names[:3])}, ...)")
        w = np.zeros(len(names), np.float32)
        for name, value in weights.items():
            w[index[name]] = float(value)
    else:
        w = np.asarray(weights, dtype=np.float32)
        if w.ndim == 0 or w.shape[-1] != len(names):
            raise WeightError(f"{kind} weights must have length {len(names)} in their last "
                              f"axis, got shape {w.shape}")
    return _check_range(w, extrapolate, kind)


def _check_range(w, extrapolate: bool, kind: str):
    """NaN/inf raise; out-of-range values are clamped with a warning (numpy or torch)."""
    finite = torch.isfinite(w).all() if isinstance(w, torch.Tensor) else np.isfinite(w).all()
    if not finite:
        raise WeightError(f"{kind} weights contain NaN or inf")
    if not extrapolate and bool((w < 0).any() or (w > 1).any()):
        warnings.warn(f"{kind} weights outside [0, 1] were clamped to it (keep them with "
                      "extrapolate=True, or --extrapolate)", WeightRangeWarning, stacklevel=3)
        w = w.clamp(0, 1) if isinstance(w, torch.Tensor) else np.clip(w, 0, 1)
    return w


def blend(rig: Rig, weights: Weights, identity: Weights | None = None, *,
          extrapolate: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """Vertices of the face with these weights.

    Parameters
    ----------
    weights : (..., K) float or {name: value}, expression weights in [0, 1]
    identity : (..., J) float or {name: value}, identity weights (optional, unbounded)
    out : (..., V, 3) float32 C-contiguous array to write into (saves allocating and
        first-touching a large result when blending batch after batch)

    Returns
    -------
    (..., V, 3) float32 vertices, centimetres. A single weight vector gives (V, 3).
    """
    w = weight_vector(weights, rig.names, extrapolate=extrapolate)
    # T[b, v*3+c] = sum_k [w, 1, w_id][b, k] * [D; b0; D_id][k, v*3+c]: one GEMM, with the
    # neutral as a basis row of weight 1, so each output vertex is written once.
    columns = [w, np.ones(w.shape[:-1] + (1,), np.float32)]
    if identity is not None:
        wid = weight_vector(identity, rig.identity_names, extrapolate=True, kind="identity")
        columns.append(np.broadcast_to(wid, w.shape[:-1] + wid.shape[-1:]))
    coeffs = np.concatenate(columns, axis=-1)
    basis = rig.basis[: coeffs.shape[-1]]  # no identity: the first K + 1 rows
    shape = w.shape[:-1] + (rig.n_vertices, 3)
    if out is None:
        return (coeffs @ basis).reshape(shape)
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
    np.matmul(coeffs, basis, out=out.reshape(w.shape[:-1] + (-1,)))
    return out


class BlendLayer(torch.nn.Module):
    """The blendshape equation as a torch module: rig arrays as buffers, weights as inputs.

    ``forward(weights (B, K), identity (B, J) | None) -> (B, V, 3)``; differentiable in both,
    on whatever device the module is moved to.
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
        w = _check_range(weights.to(self.basis.dtype), self.extrapolate, "expression")
        ones = torch.ones(w.shape[:-1] + (1,), dtype=w.dtype, device=w.device)
        columns = [w, ones]
        if identity is not None:
            if identity.shape[-1] != j:
                raise WeightError(f"identity weights must have length {j}, got {tuple(identity.shape)}")
            columns.append(_check_range(identity.to(w.dtype), True, "identity").expand(
                w.shape[:-1] + (j,)))
        coeffs = torch.cat(columns, dim=-1)
        # T[b, v*3+c] = sum_k coeffs[b, k] * basis[k, v*3+c]  (see blend())
        out = coeffs @ self.basis[: coeffs.shape[-1]]
        return out.reshape(w.shape[:-1] + (self.n_vertices, 3))

"""The blendshape equation T = b0 + sum_i w_i d_i (+ identity), in numpy (torch: ``layer``).

Weights are given as a (..., K) array in the rig's name order or as a
``{name: value}`` dict (missing names are 0). Unknown names, a wrong length and
NaN/inf are errors; values outside [0, 1], the paper's range, are clamped with a
warning unless ``extrapolate=True``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from bsviz.rig.rig import Rig

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
    return check_range(w, extrapolate, kind)


def check_range(w, extrapolate: bool, kind: str):
    """``w`` (a numpy array or a torch tensor) as it may be blended: NaN/inf raise WeightError;
    values outside [0, 1] are clamped with a ``WeightRangeWarning`` unless ``extrapolate``."""
    # Two reductions answer both questions (min and max propagate NaN in numpy and torch):
    # on a torch tensor each question asked costs a few microseconds.
    lo, hi = (w.min().item(), w.max().item()) if 0 not in w.shape else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise WeightError(f"{kind} weights contain NaN or inf")
    if not extrapolate and (lo < 0 or hi > 1):
        warnings.warn(f"{kind} weights outside [0, 1] were clamped to it (keep them with "
                      "extrapolate=True, or --extrapolate)", WeightRangeWarning, stacklevel=3)
        w = w.clip(0, 1)
    return w


SAFE_BOUND = 2.0**127  # half of float32's overflow threshold 2**128: see check_vertices


def check_vertices(vertices, bound: float = math.inf) -> None:
    """Raise WeightError if any of ``vertices`` (a numpy array or a torch tensor without grad) is
    NaN or inf: weights so large (identity weights near 1e38) that the float32 sum overflows.

    ``bound`` is an upper bound on |vertex| known from finite weights, max_k |c_k| * sum_k
    max |basis[k]| (``BlendLayer`` keeps the sum); below ``SAFE_BOUND`` the vertices are not
    looked at, saving a pass over a batch's output.
    """
    # Why that bound suffices. Each vertex is T = sum_k c_k b_k over the n basis rows, and
    # exactly |T| <= sum_k |c_k| |b_k| <= bound. In floating point each product and each
    # partial sum, in whatever order and blocking the BLAS adds them (FMA included), is such a
    # sum of terms whose magnitudes each rounding grows by at most a factor (1 + 2**-24), at
    # most n + 1 roundings deep; for n < 10**6 that factor is below 1.07, so no intermediate
    # reaches bound * 1.07 < 2**128, where float32 overflows. With finite inputs and no
    # overflow there is no inf, and no NaN (which needs inf - inf or 0 * inf).
    if bound < SAFE_BOUND:
        return
    # One reduction: a finite sum means every value is finite (NaN and inf propagate into it);
    # only when it is not, the elementwise test tells an overflowing sum from a bad vertex.
    if not math.isfinite(float(vertices.sum())) and not bool((abs(vertices) < math.inf).all()):
        raise WeightError("the weights give NaN or inf vertices: they are too large for the rig "
                          "(float32 overflows)")


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
    Raises WeightError for weights that are not finite or give vertices that are not.
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
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
        np.matmul(coeffs, basis, out=out.reshape(w.shape[:-1] + (3 * rig.n_vertices,)))
        check_vertices(out)
    return out


def displacement(rig: Rig, vertices: np.ndarray) -> np.ndarray:
    """(..., V) float32 distance |T - b0| of each vertex from the neutral face, centimetres."""
    return np.linalg.norm(np.asarray(vertices, np.float32) - rig.neutral, axis=-1)

"""The blendshape equation as a differentiable torch module (see ``blend`` for the numpy one)."""

from __future__ import annotations

import numpy as np
import torch

from bsviz.rig.blend import WeightError, check_range, check_vertices
from bsviz.rig.rig import Rig


class BlendLayer(torch.nn.Module):
    """The blendshape equation as a torch module: rig arrays as buffers, weights as inputs.

    ``forward(weights (B, K), identity (B, J) | None, out=None) -> (B, V, 3)``; differentiable
    in both, on whatever device the module is moved to. Raises WeightError as ``blend`` does.
    """

    def __init__(self, rig: Rig, *, extrapolate: bool = False):
        super().__init__()
        self.names, self.identity_names = rig.names, rig.identity_names
        self.n_vertices = rig.n_vertices
        self.extrapolate = extrapolate
        # Not persistent: the rig is data, loaded from its own file, not a model checkpoint.
        self.register_buffer("basis", torch.from_numpy(rig.basis.copy()), persistent=False)
        # sum_k max |basis[k]|: times max |coefficient| it bounds every vertex (check_vertices)
        self.basis_max_sum = float(np.abs(rig.basis).max(axis=1).sum(dtype=np.float64))

    def forward(self, weights: torch.Tensor, identity: torch.Tensor | None = None, *,
                out: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices of the faces with these weights.

        Parameters
        ----------
        weights : (..., K) float expression weights in [0, 1]
        identity : (..., J) float identity weights (optional, unbounded)
        out : (..., V, 3) contiguous tensor of the layer's dtype and device to write into,
            for inference only (autograd cannot flow through it): saves allocating and
            first-touching a large result when blending batch after batch

        Returns
        -------
        (..., V, 3) vertices, centimetres (``out`` when given).
        """
        coeffs = self._coefficients(weights, identity)
        shape = coeffs.shape[:-1] + (self.n_vertices, 3)
        basis = self.basis[: coeffs.shape[-1]]  # no identity: the first K + 1 rows
        # T[b, v*3+c] = sum_k coeffs[b, k] * basis[k, v*3+c]  (see blend())
        if coeffs.requires_grad:
            if out is not None:
                raise ValueError("out= is for inference: these weights need gradients (call "
                                 "the layer under torch.no_grad(), or without out=)")
            out = (coeffs @ basis).reshape(shape)
        else:
            out = self._output(shape, out)
            _matmul(coeffs, basis, out.view(coeffs.shape[:-1] + (basis.shape[1],)))
        largest = coeffs.abs().max().item() if coeffs.numel() else 0.0
        check_vertices(out.detach(), largest * self.basis_max_sum)
        return out

    def _coefficients(self, weights: torch.Tensor, identity: torch.Tensor | None) -> torch.Tensor:
        """(..., K + 1 [+ J]) the checked weights [w, 1, w_id] that multiply the basis rows."""
        k, j = len(self.names), len(self.identity_names)
        if weights.shape[-1] != k:
            raise WeightError(f"expression weights must have length {k} in their last axis, "
                              f"got shape {tuple(weights.shape)}")
        w = check_range(weights.to(self.basis.dtype), self.extrapolate, "expression")
        if identity is None:
            return torch.nn.functional.pad(w, (0, 1), value=1.0)  # the neutral's weight, 1
        if identity.shape[-1] != j:
            raise WeightError(f"identity weights must have length {j}, got {tuple(identity.shape)}")
        ones = torch.ones(w.shape[:-1] + (1,), dtype=w.dtype, device=w.device)
        wid = check_range(identity.to(w.dtype), True, "identity").expand(w.shape[:-1] + (j,))
        return torch.cat([w, ones, wid], dim=-1)

    def _output(self, shape: tuple[int, ...], out: torch.Tensor | None) -> torch.Tensor:
        """``out`` checked, or a new (..., V, 3) tensor; on the CPU allocated by numpy, which
        asks for transparent huge pages (torch's allocator only with THP_MEM_ALLOC_ENABLE=1), so
        first-touching a batch's output faults in 2 MB pages, not 4 kB ones."""
        dtype, device = self.basis.dtype, self.basis.device
        if out is None:
            if _on_numpy(self.basis):
                return torch.from_numpy(np.empty(shape, self.basis.numpy().dtype))
            return torch.empty(shape, dtype=dtype, device=device)
        if (out.shape != shape or out.dtype != dtype or out.device != device
                or not out.is_contiguous() or out.requires_grad):
            raise ValueError(f"out must be a contiguous {dtype} tensor of shape {tuple(shape)} "
                             f"on {device}, without grad")
        return out


def _on_numpy(tensor: torch.Tensor) -> bool:
    """Whether numpy can work on ``tensor``'s memory: a CPU tensor of float32 or float64."""
    return tensor.device.type == "cpu" and tensor.dtype in (torch.float32, torch.float64)


def _matmul(coeffs: torch.Tensor, basis: torch.Tensor, out: torch.Tensor) -> None:
    """out = coeffs @ basis, without autograd: (..., n) @ (n, 3V) into (..., 3V).

    On the CPU numpy's BLAS (OpenBLAS) does it in place on the tensors' memory: torch's (MKL)
    ran this short-and-wide product at 0.4 of OpenBLAS's speed on the AMD EPYC we measured
    (``benchmarks/bench_blend.py`` prints both).
    """
    if _on_numpy(out):
        with np.errstate(over="ignore", invalid="ignore"):  # check_vertices refuses it
            np.matmul(coeffs.numpy(), basis.numpy(), out=out.numpy())
    else:
        torch.matmul(coeffs, basis, out=out)

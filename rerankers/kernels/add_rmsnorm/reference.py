"""Pure-PyTorch reference of the fused residual add + RMSNorm (the CPU path and the test oracle; torch only).

The pre-norm step of a Mamba block (and of the backbone's final norm), written exactly as the unfused
module code computes it, so that the CPU path keeps its numbers bit for bit::

    residual_out = hidden                      if residual is None
                   residual + hidden           otherwise (torch's type promotion: the dtype of the sum)
    residual_out = residual_out.float()        if residual_in_fp32 (an upcast only: fp64 stays fp64)
    out          = xf * rsqrt(mean(xf ** 2, -1) + eps) * weight   with xf = residual_out in the compute dtype
                   cast to out_dtype (None: the weight's dtype)

The compute dtype is fp32, or fp64 where any input is fp64 (then the whole step is an fp64 oracle).
Differentiable through autograd.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..precision import reference_dtype


def residual_out_dtype(hidden_dtype: torch.dtype, residual_dtype: torch.dtype | None,
                       residual_in_fp32: bool) -> torch.dtype:
    """The dtype of ``residual_out``: the sum's (torch's promotion of the two), at least fp32 if
    ``residual_in_fp32``."""
    add = hidden_dtype if residual_dtype is None else torch.promote_types(hidden_dtype, residual_dtype)
    return torch.promote_types(add, torch.float32) if residual_in_fp32 else add


def check_add_rmsnorm_shapes(hidden: Tensor, residual: Tensor | None, weight: Tensor) -> None:
    """hidden (T, H) with H >= 1, residual None or of hidden's shape, weight (H,)."""
    if hidden.dim() != 2 or hidden.shape[1] < 1:
        raise ValueError(f"hidden must be (T, H) with H >= 1, got shape {tuple(hidden.shape)}")
    if residual is not None and residual.shape != hidden.shape:
        raise ValueError(f"residual must have hidden's shape {tuple(hidden.shape)}, got {tuple(residual.shape)}")
    if tuple(weight.shape) != (hidden.shape[1],):
        raise ValueError(f"weight must be ({hidden.shape[1]},), got {tuple(weight.shape)}")


def add_rmsnorm_ref(hidden: Tensor, residual: Tensor | None, weight: Tensor, eps: float,
                    residual_in_fp32: bool = False, out_dtype: torch.dtype | None = None,
                    keep_residual: bool = True) -> tuple[Tensor, Tensor | None]:
    """Reference residual add + RMSNorm.

    hidden: (T, H); residual: (T, H) or None (a first layer); weight: (H,); eps: added to the mean
    square. Returns (out (T, H) in ``out_dtype`` (None: weight's dtype), residual_out (T, H) in
    :func:`residual_out_dtype`, or None unless ``keep_residual``). Where residual is None and no cast
    is needed, residual_out is ``hidden`` itself.
    """
    res = hidden if residual is None else residual + hidden
    if residual_in_fp32 and res.dtype != torch.float64:
        res = res.float()
    ct = reference_dtype(res, weight)
    xf = res.to(ct)
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.to(ct)
    return out.to(out_dtype or weight.dtype), (res if keep_residual else None)

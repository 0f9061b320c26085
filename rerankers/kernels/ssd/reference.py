"""Pure-PyTorch recurrent reference of the varlen SSD scan, Mamba-2's SSM (the test oracle; torch only).

Packed and channel-last (the contract of :mod:`rerankers.kernels.varlen`), per head:
``x (T, H, P)``, ``dt (T, H)``, ``A (H,)`` (one scalar decay rate per head), ``B, C (T, G, N)`` where
head h reads group ``h // (H // G)`` (mamba_ssm's and transformers' grouping), ``D, dt_bias (H,)``.
Each sequence is scanned on its own from a zero state. The state and accumulation are fp32, or fp64
when any input is fp64; the output takes the dtype of ``x``. Differentiable through autograd.

Semantics, for one sequence (mamba_ssm's ``mamba_chunk_scan_combined`` with ``seq_idx``, without z)::

    dt_t = clamp(softplus(dt_t + dt_bias), *dt_limit)       (softplus only if dt_softplus)
    h_t  = exp(dt_t * A) * h_{t-1} + dt_t * x_t ⊗ B_t         h: (H, P, N), h_{-1} = 0
    y_t  = h_t @ C_t + D * x_t
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..precision import reference_dtype
from ..varlen import check_cu_seqlens, max_seqlen, position_ids_from_cu_seqlens, sequence_ids

NO_DT_LIMIT = (0.0, float("inf"))


def discretize_dt(dt: Tensor, dt_bias: Tensor | None, dt_softplus: bool, dt_limit: tuple[float, float],
                  dtype: torch.dtype) -> Tensor:
    """(T, H) raw time steps -> clamp(softplus(dt + dt_bias), *dt_limit) in ``dtype`` (each step optional)."""
    out = dt.to(dtype)
    if dt_bias is not None:
        out = out + dt_bias.to(dtype)
    if dt_softplus:
        out = F.softplus(out)
    if tuple(dt_limit) != NO_DT_LIMIT:
        out = out.clamp(min=dt_limit[0], max=dt_limit[1])
    return out


def heads_of_groups(t: Tensor, heads: int) -> Tensor:
    """(T, G, N) per group -> (T, H, N) per head: head h reads group h // (H // G)."""
    return t.repeat_interleave(heads // t.shape[1], dim=1)


def ssd_ref_varlen(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                   dt_bias: Tensor | None, cu_seqlens: Tensor, dt_softplus: bool = True,
                   dt_limit: tuple[float, float] = NO_DT_LIMIT) -> Tensor:
    """Reference varlen SSD scan, one time step at a time.

    x: (T, H, P); dt: (T, H); A: (H,); B, C: (T, G, N) with H % G == 0; D, dt_bias: (H,) or None;
    cu_seqlens: (S+1,) int. Returns y: (T, H, P) in x's dtype.

    Sequences are gathered into a right-padded (S, Lmax, ...) view and scanned together over Lmax
    steps; padding sits after each sequence's end, so it never reaches a real token.
    """
    T, H, P = x.shape
    check_cu_seqlens(cu_seqlens, T)
    ct = reference_dtype(x, dt, A, B, C, D, dt_bias)
    S = cu_seqlens.numel() - 1
    if T == 0 or S == 0:
        return x.new_zeros((T, H, P))
    seq_id, pos = sequence_ids(cu_seqlens, T), position_ids_from_cu_seqlens(cu_seqlens, T)
    lmax = max_seqlen(cu_seqlens)

    def pad(t: Tensor) -> Tensor:  # (T, ...) -> (S, Lmax, ...), zeros after each end
        buf = t.new_zeros((S, lmax, *t.shape[1:]), dtype=ct)
        return buf.index_put((seq_id, pos), t.to(ct))

    xP, dtP = pad(x), pad(discretize_dt(dt, dt_bias, dt_softplus, dt_limit, ct))
    BP, CP = pad(heads_of_groups(B, H)), pad(heads_of_groups(C, H))     # (S, Lmax, H, N)
    Af = A.to(ct)
    h = xP.new_zeros((S, H, P, B.shape[2]))
    ys = []
    for t in range(lmax):
        decay = torch.exp(dtP[:, t] * Af)[:, :, None, None]             # (S, H, 1, 1)
        h = decay * h + (dtP[:, t, :, None] * xP[:, t])[..., None] * BP[:, t, :, None, :]
        ys.append(torch.einsum("shpn,shn->shp", h, CP[:, t]))
    y = torch.stack(ys, dim=1)[seq_id, pos]                             # (T, H, P)
    if D is not None:
        y = y + x.to(ct) * D.to(ct)[:, None]
    return y.to(x.dtype)

"""Pure-PyTorch reference of the varlen selective scan (the CPU path and the test oracle; torch only).

Packed and channel-last (the contract of :mod:`rerankers.kernels.varlen`); each sequence is scanned
on its own from a zero state. The state and accumulation are fp32, or fp64 when any input is fp64;
the output takes the dtype of ``u``. Differentiable through autograd.

Semantics, for one sequence (as mamba_ssm's ``selective_scan_ref``)::

    delta = softplus(delta + delta_bias)          (softplus only if delta_softplus)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      h: (D, N), h_{-1} = 0
    y_t   = h_t @ C_t + D * u_t
    y_t  *= silu(z_t)                              (if z is given)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..precision import reference_dtype
from ..varlen import check_cu_seqlens, max_seqlen, position_ids_from_cu_seqlens, sequence_ids


def selective_scan_ref_varlen(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                              D: Tensor | None, z: Tensor | None, delta_bias: Tensor | None,
                              cu_seqlens: Tensor, delta_softplus: bool = True) -> Tensor:
    """Reference varlen selective scan.

    u, delta, z: (T, Dm); B, C: (T, N); A: (Dm, N); D, delta_bias: (Dm,) or None;
    cu_seqlens: (S+1,) int. Returns (T, Dm) in u's dtype.

    Sequences are gathered into a right-padded (S, Lmax, ...) view and scanned together over
    Lmax steps; padding sits after each sequence's end, so it never reaches a real token.
    """
    T, Dm = u.shape
    check_cu_seqlens(cu_seqlens, T)
    ct = reference_dtype(u, delta, A, B, C, D, z, delta_bias)
    S = cu_seqlens.numel() - 1
    out_dtype = u.dtype
    if T == 0 or S == 0:
        return u.new_zeros((T, Dm))
    seq_id, pos = sequence_ids(cu_seqlens, T), position_ids_from_cu_seqlens(cu_seqlens, T)
    lmax = max_seqlen(cu_seqlens)

    def pad(x: Tensor) -> Tensor:  # (T, F) -> (S, Lmax, F), zeros after each end
        buf = x.new_zeros((S, lmax, x.shape[1]), dtype=ct)
        return buf.index_put((seq_id, pos), x.to(ct))

    dt = delta.to(ct)
    if delta_bias is not None:
        dt = dt + delta_bias.to(ct)
    if delta_softplus:
        dt = F.softplus(dt)
    uP, dtP, BP, CP = pad(u), pad(dt), pad(B), pad(C)
    Af = A.to(ct)
    h = uP.new_zeros((S, Dm, A.shape[1]))
    ys = []
    for t in range(lmax):
        dA = torch.exp(dtP[:, t, :, None] * Af)                         # (S, Dm, N)
        h = dA * h + (dtP[:, t] * uP[:, t])[:, :, None] * BP[:, t, None, :]
        ys.append(torch.einsum("sdn,sn->sd", h, CP[:, t]))
    y = torch.stack(ys, dim=1)[seq_id, pos]                              # (T, Dm)
    if D is not None:
        y = y + u.to(ct) * D.to(ct)
    if z is not None:
        y = y * F.silu(z.to(ct))
    return y.to(out_dtype)

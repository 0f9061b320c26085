"""Pure-PyTorch references for the varlen Mamba-1 kernels (the CPU path and the test oracle).

Everything is packed and channel-last: S sequences of total length T concatenated along dim 0,
``cu_seqlens`` (S+1,) int32 with ``cu_seqlens[0] == 0`` and ``cu_seqlens[-1] == T``. Each
sequence is computed on its own (zero initial state, no tap or state crosses a boundary). The
state and accumulation are fp32, or fp64 when any input is fp64; outputs take the dtype of ``u``
(scan) / ``x`` (conv). Both functions are differentiable through autograd.

Semantics of the scan, for one sequence (as mamba_ssm's ``selective_scan_ref``)::

    delta = softplus(delta + delta_bias)          (softplus only if delta_softplus)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      h: (D, N), h_{-1} = 0
    y_t   = h_t @ C_t + D * u_t
    y_t  *= silu(z_t)                              (if z is given)
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def _compute_dtype(*tensors: Optional[Tensor]) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _seq_positions(cu_seqlens: Tensor, total: int) -> tuple[Tensor, Tensor]:
    """(T,) sequence index and (T,) position within the sequence for every packed token."""
    cu = cu_seqlens.to(torch.long)
    lengths = cu[1:] - cu[:-1]
    seq_id = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu.device), lengths,
                                     output_size=total)
    pos = torch.arange(total, device=cu.device) - cu[:-1][seq_id]
    return seq_id, pos


def check_cu_seqlens(cu_seqlens: Tensor, total: int, name: str = "cu_seqlens") -> None:
    """Validate the packing contract (host sync: only used by references and explicit checks)."""
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(f"{name} must be 1-D (S+1,), got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be int32, got {cu_seqlens.dtype}")
    cu = cu_seqlens.to("cpu", torch.long)
    if int(cu[0]) != 0 or int(cu[-1]) != total:
        raise ValueError(f"{name} must start at 0 and end at T={total}, got {int(cu[0])}..{int(cu[-1])}")
    if bool((cu[1:] < cu[:-1]).any()):
        raise ValueError(f"{name} must be non-decreasing")


def selective_scan_ref_varlen(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                              D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                              cu_seqlens: Tensor, delta_softplus: bool = True) -> Tensor:
    """Reference varlen selective scan.

    u, delta, z: (T, Dm); B, C: (T, N); A: (Dm, N); D, delta_bias: (Dm,) or None;
    cu_seqlens: (S+1,) int. Returns (T, Dm) in u's dtype.

    Sequences are gathered into a right-padded (S, Lmax, ...) view and scanned together over
    Lmax steps; padding sits after each sequence's end, so it never reaches a real token.
    """
    T, Dm = u.shape
    check_cu_seqlens(cu_seqlens, T)
    ct = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    S = cu_seqlens.numel() - 1
    out_dtype = u.dtype
    if T == 0 or S == 0:
        return u.new_zeros((T, Dm))
    seq_id, pos = _seq_positions(cu_seqlens, T)
    lmax = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())

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


def causal_conv1d_ref_varlen(x: Tensor, weight: Tensor, bias: Optional[Tensor], cu_seqlens: Tensor,
                             activation: Optional[str] = "silu") -> Tensor:
    """Reference varlen depthwise causal conv1d.

    x: (T, Dm); weight: (Dm, W), 1 <= W <= 4; bias: (Dm,) or None; activation "silu" or None.
    out[t] = act(bias + sum_k weight[:, k] * x[t - (W-1) + k]), taps before the sequence start are 0
    (as torch's conv1d with left padding W-1 on each sequence). Returns (T, Dm) in x's dtype.
    """
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be 'silu' or None, got {activation!r}")
    T, Dm = x.shape
    W = weight.shape[-1]
    check_cu_seqlens(cu_seqlens, T)
    ct = _compute_dtype(x, weight, bias)
    _, pos = _seq_positions(cu_seqlens, T)
    xf, wf = x.to(ct), weight.to(ct)
    out = torch.zeros((T, Dm), dtype=ct, device=x.device)
    if bias is not None:
        out = out + bias.to(ct)
    for shift in range(W):  # tap k = W-1-shift reads x[t - shift]
        if shift == 0:
            xs = xf
        else:
            xs = torch.cat([xf.new_zeros((min(shift, T), Dm)), xf[: max(T - shift, 0)]], dim=0)
            xs = xs * (pos >= shift).to(ct)[:, None]
        out = out + xs * wf[:, W - 1 - shift]
    if activation is not None:
        out = F.silu(out)
    return out.to(x.dtype)

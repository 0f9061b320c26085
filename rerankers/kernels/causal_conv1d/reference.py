"""Pure-PyTorch reference of the varlen depthwise causal conv1d (+ SiLU) (the CPU path and the test
oracle; torch only).

Packed and channel-last (the contract of :mod:`rerankers.kernels.varlen`); no tap crosses a
sequence boundary. Accumulation is fp32, or fp64 when any input is fp64; the output takes the
dtype of ``x``. Differentiable through autograd.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..precision import reference_dtype
from ..varlen import check_cu_seqlens, position_ids_from_cu_seqlens


def check_activation(activation: str | None) -> None:
    """The conv's activations: "silu" (alias "swish") or None."""
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be 'silu' or None, got {activation!r}")


def causal_conv1d_ref_varlen(x: Tensor, weight: Tensor, bias: Tensor | None, cu_seqlens: Tensor,
                             activation: str | None = "silu") -> Tensor:
    """Reference varlen depthwise causal conv1d.

    x: (T, Dm); weight: (Dm, W), 1 <= W <= 4; bias: (Dm,) or None; activation "silu" or None.
    out[t] = act(bias + sum_k weight[:, k] * x[t - (W-1) + k]), taps before the sequence start are 0
    (as torch's conv1d with left padding W-1 on each sequence). Returns (T, Dm) in x's dtype.
    """
    check_activation(activation)
    T, Dm = x.shape
    W = weight.shape[-1]
    check_cu_seqlens(cu_seqlens, T)
    ct = reference_dtype(x, weight, bias)
    pos = position_ids_from_cu_seqlens(cu_seqlens, T)
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

"""Optional comparison path: mamba-ssm / causal-conv1d CUDA kernels on a right-padded batch.

Upstream Mamba-1 kernels have no varlen path, so sequences are padded to (S, D, Lmax), run, and
unpadded (padding sits after each sequence's end, so results equal the packed semantics).
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .reference import _seq_positions


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"backend='mamba_ssm' needs the optional `{module.split('.')[0]}` package: "
                          "pip install 'rerankers[mamba-ssm]'") from e


def _pad_cl(x: Tensor, seq_id: Tensor, pos: Tensor, S: int, L: int) -> Tensor:
    """(T, F) -> (S, F, L) contiguous, zeros after each sequence's end."""
    buf = x.new_zeros((S, L, x.shape[1]))
    return buf.index_put((seq_id, pos), x).transpose(1, 2).contiguous()


def selective_scan_mamba_ssm(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                             z: Optional[Tensor], delta_bias: Optional[Tensor], cu_seqlens: Tensor,
                             delta_softplus: bool = True) -> Tensor:
    mod = _require("mamba_ssm.ops.selective_scan_interface")
    T = u.shape[0]
    S = cu_seqlens.numel() - 1
    seq_id, pos = _seq_positions(cu_seqlens, T)
    L = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    p = lambda x: None if x is None else _pad_cl(x, seq_id, pos, S, L)
    y = mod.selective_scan_fn(p(u), p(delta), A, p(B).unsqueeze(1), p(C).unsqueeze(1), D, p(z),
                              delta_bias, delta_softplus)
    return y.transpose(1, 2)[seq_id, pos]


def causal_conv1d_mamba_ssm(x: Tensor, weight: Tensor, bias: Optional[Tensor], cu_seqlens: Tensor,
                            activation: Optional[str] = "silu") -> Tensor:
    mod = _require("causal_conv1d")
    T = x.shape[0]
    S = cu_seqlens.numel() - 1
    seq_id, pos = _seq_positions(cu_seqlens, T)
    L = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    y = mod.causal_conv1d_fn(_pad_cl(x, seq_id, pos, S, L), weight, bias, activation=activation)
    return y.transpose(1, 2)[seq_id, pos]


__all__ = ["causal_conv1d_mamba_ssm", "selective_scan_mamba_ssm"]

"""Optional comparison path: mamba-ssm / causal-conv1d CUDA kernels on a right-padded batch.

Upstream Mamba-1 kernels have no varlen path, so sequences are padded to (S, D, Lmax), run, and
unpadded (padding sits after each sequence's end, so results equal the packed semantics).
"""
from __future__ import annotations

from torch import Tensor

from rerankers.errors import install_hint

from .varlen import max_seqlen, position_ids_from_cu_seqlens, sequence_ids


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"backend='mamba_ssm' needs the optional `{module.split('.')[0]}` package: "
                          f"{install_hint('mamba-ssm')}") from e


class _Padding:
    """The right-padded (S, F, Lmax) layout of a packed batch: each token's sequence and position."""

    def __init__(self, cu_seqlens: Tensor, T: int):
        self.seq_id, self.pos = sequence_ids(cu_seqlens, T), position_ids_from_cu_seqlens(cu_seqlens, T)
        self.S, self.L = cu_seqlens.numel() - 1, max_seqlen(cu_seqlens)

    def pad(self, x: Tensor | None) -> Tensor | None:
        """(T, F) -> (S, F, L) contiguous, zeros after each sequence's end (None stays None)."""
        if x is None:
            return None
        buf = x.new_zeros((self.S, self.L, x.shape[1]))
        return buf.index_put((self.seq_id, self.pos), x).transpose(1, 2).contiguous()

    def unpad(self, y: Tensor) -> Tensor:
        """(S, F, L) -> (T, F)."""
        return y.transpose(1, 2)[self.seq_id, self.pos]


def selective_scan_mamba_ssm(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                             z: Tensor | None, delta_bias: Tensor | None, cu_seqlens: Tensor,
                             delta_softplus: bool = True) -> Tensor:
    mod = _require("mamba_ssm.ops.selective_scan_interface")
    p = _Padding(cu_seqlens, u.shape[0])
    # mamba-ssm wants a variable B / C in the input's dtype (our kernels take any float dtype: Mamba's mixer
    # passes them in fp32), and a row-major A
    B, C = B.to(u.dtype), C.to(u.dtype)
    A = A.contiguous()  # Mamba's mixer passes A with transposed strides (our launchers read it states-major)
    y = mod.selective_scan_fn(p.pad(u), p.pad(delta), A, p.pad(B).unsqueeze(1), p.pad(C).unsqueeze(1), D, p.pad(z),
                              delta_bias, delta_softplus)
    return p.unpad(y)


def causal_conv1d_mamba_ssm(x: Tensor, weight: Tensor, bias: Tensor | None, cu_seqlens: Tensor,
                            activation: str | None = "silu") -> Tensor:
    mod = _require("causal_conv1d")
    p = _Padding(cu_seqlens, x.shape[0])
    return p.unpad(mod.causal_conv1d_fn(p.pad(x), weight, bias, activation=activation))


__all__ = ["causal_conv1d_mamba_ssm", "selective_scan_mamba_ssm"]

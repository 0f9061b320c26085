"""Small helpers shared by the kernel wrappers."""
from __future__ import annotations

import torch
from torch import Tensor


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def build_token_starts(cu_seqlens: Tensor, total: int) -> Tensor:
    """(T,) int32: start token of the sequence that holds each token (device ops only)."""
    cu = cu_seqlens.to(torch.int64)
    t = torch.arange(total, dtype=torch.int64, device=cu.device)
    s = torch.searchsorted(cu, t, right=True) - 1
    return cu.clamp(max=total)[s.clamp_(0, cu.numel() - 1)].to(torch.int32).contiguous()

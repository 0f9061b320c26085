"""Work tables for varlen kernels, built on the device with no host synchronisation.

A sequence is cut into *segments* of at most ``seg_len`` tokens (one program each, so that one
long sequence still fills the grid) and each segment into *chunks* of ``block_t`` tokens (the
unit whose start state the forward stores for the backward). Table sizes come from upper bounds:
at most ``cdiv(T, seg_len) + S`` segments and ``cdiv(T, block_t) + S`` chunks.

seginfo: (3, n_seg_max) int32 with rows
    0: sequence index of the segment, or -1 for an unused slot
    1: index k of the segment within its sequence (tokens ``cu[s] + k*seg_len`` onwards)
    2: slot of the sequence's first chunk in the chunk-state buffer (``cumsum(cdiv(len, block_t))``)

Segments that are not the last of their sequence are full (``seg_len`` tokens), and segments that
are not the first start ``>= seg_len`` after any earlier segment's start, so ``start // seg_len``
is a unique slot for either kind: buffers of ``cdiv(T, seg_len)`` rows hold their carries.
"""
from __future__ import annotations

import torch
from torch import Tensor


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def n_seg_max(total: int, num_seqs: int, seg_len: int) -> int:
    return cdiv(total, seg_len) + num_seqs


def n_chunk_max(total: int, num_seqs: int, block_t: int) -> int:
    return cdiv(total, block_t) + num_seqs


def n_seg_slots(total: int, seg_len: int) -> int:
    return max(cdiv(total, seg_len), 1)


def build_seginfo(cu_seqlens: Tensor, total: int, seg_len: int, block_t: int) -> Tensor:
    """(3, n_seg_max) int32 table described in the module docstring (device ops only)."""
    dev = cu_seqlens.device
    S = cu_seqlens.numel() - 1
    n = n_seg_max(total, S, seg_len)
    cu = cu_seqlens.to(torch.int64)
    lengths = cu[1:] - cu[:-1]
    nseg = (lengths + seg_len - 1) // seg_len
    seg_cu = torch.zeros(S + 1, dtype=torch.int64, device=dev)
    seg_cu[1:] = torch.cumsum(nseg, 0)
    chunk_cu = torch.zeros(S + 1, dtype=torch.int64, device=dev)
    chunk_cu[1:] = torch.cumsum((lengths + block_t - 1) // block_t, 0)
    p = torch.arange(n, dtype=torch.int64, device=dev)
    s = (torch.searchsorted(seg_cu, p, right=True) - 1).clamp_(0, max(S - 1, 0))
    k = p - seg_cu[s]
    valid = p < seg_cu[-1]
    info = torch.stack([torch.where(valid, s, torch.full_like(s, -1)), torch.where(valid, k, torch.zeros_like(k)),
                        chunk_cu[s]])
    return info.to(torch.int32).contiguous()


def build_token_starts(cu_seqlens: Tensor, total: int) -> Tensor:
    """(T,) int32: start token of the sequence that holds each token (device ops only)."""
    cu = cu_seqlens.to(torch.int64)
    t = torch.arange(total, dtype=torch.int64, device=cu.device)
    s = torch.searchsorted(cu, t, right=True) - 1
    return cu.clamp(max=total)[s.clamp_(0, cu.numel() - 1)].to(torch.int32).contiguous()

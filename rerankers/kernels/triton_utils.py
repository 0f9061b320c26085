"""What the Triton kernels of both ops share: launch-side helpers (host) and ``@triton.jit`` helpers.

Imported only where a Triton backend runs (the op modules import it; ``rerankers.kernels`` does not).

Layout both ops use: packed channel-last (T, D) buffers, one channel per thread, a chunk of rows
loaded at once as a (rows, BD) tile whose rows sit in each thread's registers (so picking a row is
free), and sequence starts read from ``cu_seqlens`` as a bit mask per chunk (one binary search per
program, then a pointer that moves with the walk).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1`` (the kernels then run on CPU tensors: tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(x: Tensor, op: str) -> None:
    """The Triton kernels need CUDA tensors, or the interpreter (CPU tensors)."""
    if not x.is_cuda and not interpreting():
        raise RuntimeError(f"the Triton {op} needs CUDA tensors (or TRITON_INTERPRET=1 on the CPU); "
                           "use backend='reference' on the CPU")


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(x: int) -> int:
    """The smallest power of two >= x (1 for x <= 1)."""
    return 1 << max(int(x) - 1, 0).bit_length()


# The floor of the search depth: every count of sequences up to 2**LOG_S_MIN - 1 shares one compilation of
# each varlen kernel (LOG_S is a constexpr; the kernels do not specialise on S either). A deeper search costs a
# few scalar loads per program, once (benchmarks/bench_kernels.py --only log-s times it; KERNEL_NOTES.md).
LOG_S_MIN = 9


def log_s(S: int) -> int:
    """Halvings of the in-kernel binary search over cu_seqlens (S+1 entries): 2**LOG_S > S, at least
    :data:`LOG_S_MIN`."""
    return max(int(S).bit_length(), LOG_S_MIN, 1)


def row_major(x: Tensor | None) -> Tensor | None:
    """Keep row-strided views (e.g. slices of a projection); only the last dim must be unit-stride."""
    if x is None:
        return None
    return x if x.stride(-1) == 1 else x.contiguous()


def int32_cu(cu_seqlens: Tensor) -> Tensor:
    """(S+1,) int32 contiguous: the ``cu_seqlens`` the kernels read."""
    return cu_seqlens.to(torch.int32).contiguous()


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _lower_bound(cu_ptr, S, pos, LOG_S: tl.constexpr):
    """Smallest p in [0, S] with cu[p] >= pos (cu sorted, cu[S] = T >= pos): a branch-free binary
    search of ``LOG_S`` halvings (2**LOG_S > S)."""
    p = pos * 0
    for k in tl.static_range(LOG_S):
        q = p + (1 << (LOG_S - 1 - k))
        c = tl.load(cu_ptr + tl.minimum(q - 1, S))
        p = tl.where((q - 1 <= S) & (c < pos), q, p)
    return p


@triton.jit
def _start_bits(cu_ptr, S, p, lo, n: tl.constexpr, WIDE: tl.constexpr):
    """Bit j of the returned mask is set where row lo + j starts a sequence, j < n; the mask is int64
    if WIDE (n <= 64), else int32 (n <= 32). ``p`` is the first index with cu[p] >= lo; returns
    (mask, first index with cu >= lo + n). Empty sequences (repeated entries) set the same bit again."""
    one = lo * 0 + 1
    if WIDE:
        one = one.to(tl.int64)
    sm = one * 0
    c = tl.load(cu_ptr + tl.minimum(p, S))
    while (p <= S) & (c < lo + n):
        sm = sm | (one << (c - lo).to(one.dtype))
        p += 1
        c = tl.load(cu_ptr + tl.minimum(p, S))
    return sm, p


@triton.jit
def _tile(ptr, rows, stride, offs_d, mask):
    """(BT, BD) fp32 tile of rows ``rows`` (int64) and channels ``offs_d`` of a row-major buffer."""
    return tl.load(ptr + rows[:, None] * stride + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _row(tile, rr, i):
    """Row i (constexpr) of a (BT, BD) tile whose rows sit in each thread's registers."""
    return tl.sum(tl.where(rr[:, None] == i, tile, 0.0), axis=0)

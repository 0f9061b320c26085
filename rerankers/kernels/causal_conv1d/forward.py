"""Triton kernels of the varlen depthwise causal conv1d (+ SiLU), forward (and the helpers of both
walks), packed channel-last layout.

The conv is computed as a walk in time, like the selective scan: one channel per thread, a chunk
of BT rows loaded at once (rows in the thread's registers, so picking a row is free), R chunks per
program, and what crosses rows carried in registers: the last three inputs in the forward, the
next three gradients in the backward (which walks from the end). With w_s the weight of the tap
that reads s rows back (zero for s >= W), output row t is y[t] = act(b + sum_s w_s x[t - s]),
dropping taps that reach before t's sequence start. Sequence starts are a bit mask per chunk read
from ``cu_seqlens`` (one binary search per program, then a pointer that moves with the walk):
nothing is tabulated per call, no input row is loaded twice, nothing is reduced across threads
(no barriers, no shuffles), and dW/dbias are summed per program in registers and written to a
per-row-block buffer that the host adds up (no atomics: the gradients are deterministic).

The layout comes from the memory ops: row strides the compiler cannot see (``do_not_specialize``)
keep one channel per thread instead of vectors of channels (as in the scan,
:mod:`rerankers.kernels.selective_scan.forward`).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..triton_utils import _lower_bound, _row, _sigmoid, _start_bits, _tile


@triton.jit
def _clear(sm, j: tl.constexpr):
    """Row j of the bit mask does not start a sequence."""
    return ((sm >> j) & 1) == 0


@triton.jit
def _taps(w_ptr, b_ptr, offs_d, md, W: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Per-channel fp32 weights w_s of the taps reading s = 0..3 rows back (0 for s >= W), bias."""
    w0 = tl.load(w_ptr + offs_d * W + (W - 1), mask=md, other=0.0).to(tl.float32)
    w1 = tl.load(w_ptr + offs_d * W + (W - 2), mask=md & (W > 1), other=0.0).to(tl.float32)
    w2 = tl.load(w_ptr + offs_d * W + (W - 3), mask=md & (W > 2), other=0.0).to(tl.float32)
    w3 = tl.load(w_ptr + offs_d * W + (W - 4), mask=md & (W > 3), other=0.0).to(tl.float32)
    b = w0 * 0.0
    if HAS_BIAS:
        b = tl.load(b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    return w0, w1, w2, w3, b


@triton.jit
def _rows_tile(ptr, t0, rr, T, stride, offs_d, md):
    """(len(rr), BD) fp32 tile of rows t0 + rr (zero outside [0, T))."""
    rows = t0 + rr
    return _tile(ptr, rows.to(tl.int64), stride, offs_d, ((rows >= 0) & (rows < T))[:, None] & md[None, :])


@triton.jit(do_not_specialize=["stride_x", "stride_y", "S"])
def _conv_fwd_walk_kernel(x_ptr, w_ptr, b_ptr, y_ptr, cu_ptr, stride_x, stride_y, T, Dm, S,
                          W: tl.constexpr, LOG_S: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                          BT: tl.constexpr, R: tl.constexpr, BD: tl.constexpr):
    """Forward, rows [r0, r0 + R*BT) of a program: y[t] = act(b + sum_s w_s x[t - s]) with the
    taps that reach before t's sequence start dropped. The walk starts 3 rows early (a halo tile)
    to fill the carried x[t-1..t-3]."""
    offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
    md = offs_d < Dm
    w0, w1, w2, w3, b = _taps(w_ptr, b_ptr, offs_d, md, W, HAS_BIAS)
    r0 = tl.program_id(0) * (BT * R)
    rr = tl.arange(0, BT)
    rh = tl.arange(0, 4)
    p = _lower_bound(cu_ptr, S, r0 - 3, LOG_S)
    H = _rows_tile(x_ptr, r0 - 4, rh, T, stride_x, offs_d, md)
    sm, p = _start_bits(cu_ptr, S, p, r0 - 3, 3, True)  # p: first index with cu >= r0
    x1 = _row(H, rh, 1) * 0.0
    x2 = x1
    x3 = x1
    for j in tl.static_range(3):
        keep = _clear(sm, j)
        x3, x2, x1 = tl.where(keep, x2, 0.0), tl.where(keep, x1, 0.0), _row(H, rh, j + 1)
    for c in range(R):
        t0 = r0 + c * BT
        if t0 < T:
            X = _rows_tile(x_ptr, t0, rr, T, stride_x, offs_d, md)
            sm, p = _start_bits(cu_ptr, S, p, t0, BT, True)
            Y = tl.zeros([BT, BD], dtype=tl.float32)
            for i in tl.static_range(BT):
                x0 = _row(X, rr, i)
                keep = _clear(sm, i)
                x1, x2, x3 = tl.where(keep, x1, 0.0), tl.where(keep, x2, 0.0), tl.where(keep, x3, 0.0)
                y = b + w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3
                if SILU:
                    y = y * _sigmoid(y)
                Y = tl.where(rr[:, None] == i, y[None, :], Y)
                x3, x2, x1 = x2, x1, x0
            rows = t0 + rr
            tl.store(y_ptr + rows.to(tl.int64)[:, None] * stride_y + offs_d[None, :], Y,
                     mask=(rows < T)[:, None] & md[None, :])

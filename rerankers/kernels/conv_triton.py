"""Triton kernels of the varlen depthwise causal conv1d (+ SiLU), packed channel-last layout.

Tap k of output row t reads ``x[t - (W-1-k)]`` only where that row is in the same sequence
(``t - start(t) >= W-1-k``). One program per (BT rows, BD channels); the program finds the sequence
starts near its rows in ``cu_seqlens`` itself (one binary search, then the few starts in range), so
nothing is tabulated per call. The backward recomputes the pre-activation of the W output
rows that read each input row, so nothing but x is saved; dW and dbias are reduced over the
program's rows in registers and added into fp32 buffers with atomics.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .scan_triton import _lower_bound


@triton.jit
def _row_starts(cu_ptr, S, p, rows, lo, hi):
    """Start of each row's sequence, for rows in [lo, hi); ``lo - 1`` where it starts before lo.
    ``p`` is the first index with cu[p] >= lo."""
    st = rows * 0 + (lo - 1)
    c = tl.load(cu_ptr + tl.minimum(p, S))
    while (p <= S) & (c < hi):
        st = tl.where(rows >= c, c, st)
        p += 1
        c = tl.load(cu_ptr + tl.minimum(p, S))
    return st


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, cu_ptr, stride_x, stride_y, T, Dm, S,
                     W: tl.constexpr, LOG_S: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                     BT: tl.constexpr, BD: tl.constexpr):
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
    mr = rows < T
    md = offs_d < Dm
    r0 = tl.program_id(0) * BT
    p = _lower_bound(cu_ptr, S, r0 - (W - 1), LOG_S)
    pos = rows - _row_starts(cu_ptr, S, p, rows, r0 - (W - 1), r0 + BT)
    r64 = rows.to(tl.int64)
    acc = tl.zeros([BT, BD], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)[None, :]
    for k in tl.static_range(W):
        shift = W - 1 - k
        mk = mr & (pos >= shift)
        xk = tl.load(x_ptr + (r64 - shift)[:, None] * stride_x + offs_d[None, :], mask=mk[:, None] & md[None, :],
                     other=0.0).to(tl.float32)
        wk = tl.load(w_ptr + offs_d * W + k, mask=md, other=0.0).to(tl.float32)
        acc += xk * wk[None, :]
    if SILU:
        acc = acc / (1.0 + tl.exp(-acc))
    tl.store(y_ptr + r64[:, None] * stride_y + offs_d[None, :], acc, mask=mr[:, None] & md[None, :])


@triton.jit
def _conv_bwd_kernel(x_ptr, w_ptr, b_ptr, dy_ptr, cu_ptr, dx_ptr, dw_ptr, db_ptr,
                     stride_x, stride_dy, stride_dx, T, Dm, S,
                     W: tl.constexpr, LOG_S: tl.constexpr, WP: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                     BT: tl.constexpr, BD: tl.constexpr):
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
    mr = rows < T
    md = offs_d < Dm
    r0 = tl.program_id(0) * BT
    lo, hi = r0 - (W - 1), r0 + BT + W - 1
    p = _lower_bound(cu_ptr, S, lo, LOG_S)
    st = _row_starts(cu_ptr, S, p, rows, lo, hi)
    r64 = rows.to(tl.int64)
    offs_w = tl.arange(0, WP)
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    dx = tl.zeros([BT, BD], dtype=tl.float32)
    dw = tl.zeros([BD, WP], dtype=tl.float32)
    db = tl.zeros([BD], dtype=tl.float32)
    for j in tl.static_range(W):
        # output row t + j reads input row t through tap W-1-j
        rj = rows + j
        inb = mr & (rj < T)
        stj = _row_starts(cu_ptr, S, p, rj, lo, hi)
        mj = inb & (stj == st)
        posj = rj - stj
        pre = tl.zeros([BT, BD], dtype=tl.float32)
        if HAS_BIAS:
            pre += bias[None, :]
        if SILU:
            for k in tl.static_range(W):
                shift = W - 1 - k
                mk = mj & (posj >= shift)
                xk = tl.load(x_ptr + (r64 + j - shift)[:, None] * stride_x + offs_d[None, :],
                             mask=mk[:, None] & md[None, :], other=0.0).to(tl.float32)
                wk = tl.load(w_ptr + offs_d * W + k, mask=md, other=0.0).to(tl.float32)
                pre += xk * wk[None, :]
        g = tl.load(dy_ptr + (r64 + j)[:, None] * stride_dy + offs_d[None, :], mask=mj[:, None] & md[None, :],
                    other=0.0).to(tl.float32)
        if SILU:
            sg = 1.0 / (1.0 + tl.exp(-pre))
            g = g * sg * (1.0 + pre * (1.0 - sg))
        wj = tl.load(w_ptr + offs_d * W + (W - 1 - j), mask=md, other=0.0).to(tl.float32)
        dx += g * wj[None, :]
        if j == 0:
            # this program's output rows: dbias and every tap's dW
            db += tl.sum(g, axis=0)
            pos = rows - st
            for k in tl.static_range(W):
                shift = W - 1 - k
                mk = mr & (pos >= shift)
                xk = tl.load(x_ptr + (r64 - shift)[:, None] * stride_x + offs_d[None, :],
                             mask=mk[:, None] & md[None, :], other=0.0).to(tl.float32)
                dwk = tl.sum(g * xk, axis=0)
                dw += tl.where((offs_w == k)[None, :], dwk[:, None], 0.0)
    tl.store(dx_ptr + r64[:, None] * stride_dx + offs_d[None, :], dx, mask=mr[:, None] & md[None, :])
    tl.atomic_add(dw_ptr + offs_d[:, None] * W + offs_w[None, :], dw,
                  mask=md[:, None] & (offs_w < W)[None, :], sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(db_ptr + offs_d, db, mask=md, sem="relaxed")

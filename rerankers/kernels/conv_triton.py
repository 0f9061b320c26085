"""Triton kernels of the varlen depthwise causal conv1d (+ SiLU), packed channel-last layout.

Tap k of output row t reads ``x[t - (W-1-k)]`` only where that row is in the same sequence
(``t - tstart[t] >= W-1-k``, ``tstart``: the start token of each token's sequence, built once per call
by ``_token_starts_kernel``: one launch, a vectorised binary search over ``cu_seqlens``). A binary
search per conv program instead was latency-bound: its dependent loads cost more than the program's
work (measured: 2-4x slower). One program per (BT rows, BD channels). The backward recomputes the pre-activation of the W output
rows that read each input row, so nothing but x is saved; dW and dbias are reduced over the
program's rows in registers (one channel per thread, the rows in its registers: the row stride is
left unspecialised, as in the scan) and added into fp32 buffers with atomics.
"""
from __future__ import annotations

import triton
import triton.language as tl



@triton.jit
def _token_starts_kernel(cu_ptr, out_ptr, T, S, LOG_S: tl.constexpr, BLOCK: tl.constexpr):
    """out[t] = cu[s] for the sequence s holding token t (the largest s with cu[s] <= t)."""
    t = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    p = t * 0
    for k in tl.static_range(LOG_S):
        q = p + (1 << (LOG_S - 1 - k))
        c = tl.load(cu_ptr + tl.minimum(q, S))
        p = tl.where((q <= S) & (c <= t), q, p)
    tl.store(out_ptr + t, tl.load(cu_ptr + p), mask=t < T)


@triton.jit
def _starts(tstart_ptr, rows, r0, T, SHIFT: tl.constexpr, BT: tl.constexpr):
    """tstart of rows ``rows + SHIFT`` ((BT, BD), row r0 + i in row i), -1 outside [0, T): BT
    scalar loads placed into the tile (a tile-shaped load gets a layout of its own, and converting it
    through shared memory costs barriers)."""
    st = rows * 0
    for i in tl.static_range(BT):
        r = r0 + i + SHIFT
        st = tl.where(rows == r0 + i, tl.load(tstart_ptr + r, mask=(r >= 0) & (r < T), other=-1), st)
    return st


@triton.jit
def _rows(ptr, r64, stride, offs_d, T, md):
    """(BT, BD) fp32 rows ``r64`` ((BT, BD) row indices, masked to [0, T)) of a row-major buffer; with the row stride
    unspecialised the compiler keeps one channel per thread and the rows in its registers."""
    m = (r64 >= 0) & (r64 < T)
    return tl.load(ptr + r64 * stride + offs_d[None, :], mask=m & md[None, :], other=0.0).to(tl.float32)


@triton.jit(do_not_specialize=["stride_x", "stride_y"])
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, tstart_ptr, stride_x, stride_y, T, Dm,
                     W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                     BT: tl.constexpr, BD: tl.constexpr):
    r0 = tl.program_id(0) * BT
    offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
    md = offs_d < Dm
    # row indices as (BT, BD) tiles in the tiles' own layout (1-D row vectors would be laid out
    # across threads and converted through shared memory at every use)
    rows = r0 + tl.arange(0, BT)[:, None] + 0 * offs_d[None, :]
    mr = rows < T
    r64 = rows.to(tl.int64)
    pos = rows - _starts(tstart_ptr, rows, r0, T, 0, BT)
    acc = tl.zeros([BT, BD], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)[None, :]
    for k in tl.static_range(W):
        shift = W - 1 - k
        xk = tl.where(pos >= shift, _rows(x_ptr, r64 - shift, stride_x, offs_d, T, md), 0.0)
        acc += xk * tl.load(w_ptr + offs_d * W + k, mask=md, other=0.0).to(tl.float32)[None, :]
    if SILU:
        acc = acc / (1.0 + tl.exp(-acc))
    tl.store(y_ptr + r64 * stride_y + offs_d[None, :], acc, mask=mr & md[None, :])


@triton.jit(do_not_specialize=["stride_x", "stride_dy", "stride_dx"])
def _conv_bwd_kernel(x_ptr, w_ptr, b_ptr, dy_ptr, tstart_ptr, dx_ptr, dw_ptr, db_ptr,
                     stride_x, stride_dy, stride_dx, T, Dm,
                     W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                     BT: tl.constexpr, BD: tl.constexpr):
    """dx[t] = sum_j g[t+j] w[W-1-j] over the rows t+j of t's sequence, g = dy * silu'(pre), the
    pre-activation recomputed from x (rows with the same offset are loaded once: the loads are
    masked only to [0, T) and the sequence masks applied after). dW and dbias sum this program's
    output rows in registers (rows sit in each thread) and are added with atomics."""
    r0 = tl.program_id(0) * BT
    offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
    md = offs_d < Dm
    rows = r0 + tl.arange(0, BT)[:, None] + 0 * offs_d[None, :]
    mr = rows < T
    r64 = rows.to(tl.int64)
    st = _starts(tstart_ptr, rows, r0, T, 0, BT)
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    dx = tl.zeros([BT, BD], dtype=tl.float32)
    for j in tl.static_range(W):
        # output row t + j reads input row t through tap W-1-j
        rj = rows + j
        stj = _starts(tstart_ptr, rows, r0, T, j, BT)
        mj = mr & (rj < T) & (stj == st)
        posj = rj - stj
        if SILU:
            pre = tl.zeros([BT, BD], dtype=tl.float32)
            if HAS_BIAS:
                pre += bias[None, :]
            for k in tl.static_range(W):
                shift = W - 1 - k
                xk = tl.where(posj >= shift, _rows(x_ptr, r64 + j - shift, stride_x, offs_d, T, md), 0.0)
                pre += xk * tl.load(w_ptr + offs_d * W + k, mask=md, other=0.0).to(tl.float32)[None, :]
        g = tl.where(mj, _rows(dy_ptr, r64 + j, stride_dy, offs_d, T, md), 0.0)
        if SILU:
            sg = 1.0 / (1.0 + tl.exp(-pre))
            g = g * sg * (1.0 + pre * (1.0 - sg))
        dx += g * tl.load(w_ptr + offs_d * W + (W - 1 - j), mask=md, other=0.0).to(tl.float32)[None, :]
        if j == 0:
            # this program's output rows: dbias and every tap's dW
            if HAS_BIAS:
                tl.atomic_add(db_ptr + offs_d, tl.sum(g, axis=0), mask=md, sem="relaxed")
            pos = rows - st
            for k in tl.static_range(W):
                shift = W - 1 - k
                xk = tl.where(pos >= shift, _rows(x_ptr, r64 - shift, stride_x, offs_d, T, md), 0.0)
                tl.atomic_add(dw_ptr + offs_d * W + k, tl.sum(g * xk, axis=0), mask=md, sem="relaxed")
    tl.store(dx_ptr + r64 * stride_dx + offs_d[None, :], dx, mask=mr & md[None, :])

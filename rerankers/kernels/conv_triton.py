"""Triton kernels of the varlen depthwise causal conv1d (+ SiLU), packed channel-last layout.

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
keep one channel per thread instead of vectors of channels (see scan_triton.py).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .scan_triton import _lower_bound, _row, _tile


@triton.jit
def _start_bits(cu_ptr, S, p, lo, n: tl.constexpr):
    """Bit j (int64) set where row lo + j starts a sequence, j < n; p: first index with cu[p] >= lo.
    Returns (bits, first index with cu >= lo + n) (an int64 ``_starts_ahead`` of scan_triton: the
    backward's masks span BT + 4 rows)."""
    one = (lo * 0 + 1).to(tl.int64)
    sm = one * 0
    c = tl.load(cu_ptr + tl.minimum(p, S))
    while (p <= S) & (c < lo + n):
        sm = sm | (one << (c - lo).to(tl.int64))
        p += 1
        c = tl.load(cu_ptr + tl.minimum(p, S))
    return sm, p


@triton.jit
def _back_to(cu_ptr, S, p, pos):
    """Smallest q <= p with cu[q] >= pos, given cu[p] >= pos or p = S + 1."""
    c = tl.load(cu_ptr + tl.maximum(p - 1, 0))
    while (p > 0) & (c >= pos):
        p -= 1
        c = tl.load(cu_ptr + tl.maximum(p - 1, 0))
    return p


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


@triton.jit
def _rowk(tile, k: tl.constexpr):
    """Row k of a (rows, BD) tile whose rows sit in each thread's registers."""
    return _row(tile, tl.arange(0, tile.shape[0]), k)


@triton.jit
def _xrow(X, H, k: tl.constexpr):
    """x at chunk row k: row k of the chunk tile X, or for k in -3..-1 row 4 + k of the halo H
    (the 4 rows before the chunk)."""
    if k >= 0:
        r = _rowk(X, k)
    else:
        r = _rowk(H, 4 + k)
    return r


@triton.jit
def _bwd_row(X, H, DY, i: tl.constexpr, sm, b, w0, w1, w2, w3, g1, g2, g3, SILU: tl.constexpr):
    """Chunk row i of the backward. ``sm`` bit j: row (chunk start - 3 + j) starts a sequence;
    g1..g3: the gradients of the next three rows (already zero past the sequence's end).
    Returns (g, dx, x[t], x[t-1], x[t-2], x[t-3]), the older rows zero outside the sequence."""
    a1 = _clear(sm, i + 3)
    a2 = a1 & _clear(sm, i + 2)
    a3 = a2 & _clear(sm, i + 1)
    x0 = _xrow(X, H, i)
    x1 = tl.where(a1, _xrow(X, H, i - 1), 0.0)
    x2 = tl.where(a2, _xrow(X, H, i - 2), 0.0)
    x3 = tl.where(a3, _xrow(X, H, i - 3), 0.0)
    pre = b + w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3
    g = _rowk(DY, i)
    if SILU:
        sg = 1.0 / (1.0 + tl.exp(-pre))
        g = g * sg * (1.0 + pre * (1.0 - sg))
    dx = w0 * g + w1 * g1 + w2 * g2 + w3 * g3
    return g, dx, x0, x1, x2, x3


@triton.jit(do_not_specialize=["stride_x", "stride_y"])
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
    sm, p = _start_bits(cu_ptr, S, p, r0 - 3, 3)  # p: first index with cu >= r0
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
            sm, p = _start_bits(cu_ptr, S, p, t0, BT)
            Y = tl.zeros([BT, BD], dtype=tl.float32)
            for i in tl.static_range(BT):
                x0 = _row(X, rr, i)
                keep = _clear(sm, i)
                x1, x2, x3 = tl.where(keep, x1, 0.0), tl.where(keep, x2, 0.0), tl.where(keep, x3, 0.0)
                y = b + w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3
                if SILU:
                    y = y / (1.0 + tl.exp(-y))
                Y = tl.where(rr[:, None] == i, y[None, :], Y)
                x3, x2, x1 = x2, x1, x0
            rows = t0 + rr
            tl.store(y_ptr + rows.to(tl.int64)[:, None] * stride_y + offs_d[None, :], Y,
                     mask=(rows < T)[:, None] & md[None, :])


@triton.jit(do_not_specialize=["stride_x", "stride_dy", "stride_dx"])
def _conv_bwd_walk_kernel(x_ptr, w_ptr, b_ptr, dy_ptr, cu_ptr, dx_ptr, part_ptr,
                          stride_x, stride_dy, stride_dx, T, Dm, S,
                          W: tl.constexpr, LOG_S: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                          BT: tl.constexpr, R: tl.constexpr, BD: tl.constexpr):
    """Backward, rows [r0, r1 = r0 + R*BT) of a program, walked from the end: with
    g = dy * act'(pre), dx[t] = sum_s w_s g[t + s] (the three next gradients are carried and
    dropped at a sequence end) and dw_s = sum_t g[t] x[t - s], db = sum_t g[t], summed in registers
    and stored to ``part`` (row block, W + 1, D) for the host to add up (no atomics). The rows
    r1..r1+2 are walked first, without output, to fill the carried gradients."""
    rb = tl.program_id(0)
    offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
    md = offs_d < Dm
    w0, w1, w2, w3, b = _taps(w_ptr, b_ptr, offs_d, md, W, HAS_BIAS)
    r0 = rb * (BT * R)
    r1 = r0 + BT * R
    rr = tl.arange(0, BT)
    rh = tl.arange(0, 4)
    # the 3 rows after the block: gradients only
    p = _lower_bound(cu_ptr, S, r1 - 3, LOG_S)
    X4 = _rows_tile(x_ptr, r1, rh, T, stride_x, offs_d, md)
    H = _rows_tile(x_ptr, r1 - 4, rh, T, stride_x, offs_d, md)
    D4 = _rows_tile(dy_ptr, r1, rh, T, stride_dy, offs_d, md)
    sm, _ = _start_bits(cu_ptr, S, p, r1 - 3, 7)
    g1 = w0 * 0.0
    g2 = g1
    g3 = g1
    for k in tl.static_range(3):
        i = 2 - k
        keep = _clear(sm, i + 4)
        g1, g2, g3 = tl.where(keep, g1, 0.0), tl.where(keep, g2, 0.0), tl.where(keep, g3, 0.0)
        g, dx, x0, x1, x2, x3 = _bwd_row(X4, H, D4, i, sm, b, w0, w1, w2, w3, g1, g2, g3, SILU)
        g3, g2, g1 = g2, g1, g
    dw0 = w0 * 0.0
    dw1 = dw0
    dw2 = dw0
    dw3 = dw0
    db = dw0
    for cc in range(R):
        t0 = r1 - (cc + 1) * BT
        p = _back_to(cu_ptr, S, p, t0 - 3)
        if t0 < T:
            X = _rows_tile(x_ptr, t0, rr, T, stride_x, offs_d, md)
            H = _rows_tile(x_ptr, t0 - 4, rh, T, stride_x, offs_d, md)
            DY = _rows_tile(dy_ptr, t0, rr, T, stride_dy, offs_d, md)
            sm, _ = _start_bits(cu_ptr, S, p, t0 - 3, BT + 4)
            DX = tl.zeros([BT, BD], dtype=tl.float32)
            for k in tl.static_range(BT):
                i = BT - 1 - k
                keep = _clear(sm, i + 4)
                g1, g2, g3 = tl.where(keep, g1, 0.0), tl.where(keep, g2, 0.0), tl.where(keep, g3, 0.0)
                g, dx, x0, x1, x2, x3 = _bwd_row(X, H, DY, i, sm, b, w0, w1, w2, w3, g1, g2, g3, SILU)
                DX = tl.where(rr[:, None] == i, dx[None, :], DX)
                dw0 += g * x0
                dw1 += g * x1
                dw2 += g * x2
                dw3 += g * x3
                db += g
                g3, g2, g1 = g2, g1, g
            rows = t0 + rr
            tl.store(dx_ptr + rows.to(tl.int64)[:, None] * stride_dx + offs_d[None, :], DX,
                     mask=(rows < T)[:, None] & md[None, :])
    base = part_ptr + rb.to(tl.int64) * (W + 1) * Dm + offs_d
    tl.store(base + (W - 1) * Dm, dw0, mask=md)
    if W > 1:
        tl.store(base + (W - 2) * Dm, dw1, mask=md)
    if W > 2:
        tl.store(base + (W - 3) * Dm, dw2, mask=md)
    if W > 3:
        tl.store(base + (W - 4) * Dm, dw3, mask=md)
    tl.store(base + W * Dm, db, mask=md)

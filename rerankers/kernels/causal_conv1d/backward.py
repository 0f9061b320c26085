"""Triton kernels of the varlen causal conv1d, backward (the walk and its layout: :mod:`.forward`)."""
from __future__ import annotations

import triton
import triton.language as tl

from ..triton_utils import _lower_bound, _row, _sigmoid, _start_bits
from .forward import _clear, _rows_tile, _taps


@triton.jit
def _back_to(cu_ptr, S, p, pos):
    """Smallest q <= p with cu[q] >= pos, given cu[p] >= pos or p = S + 1."""
    c = tl.load(cu_ptr + tl.maximum(p - 1, 0))
    while (p > 0) & (c >= pos):
        p -= 1
        c = tl.load(cu_ptr + tl.maximum(p - 1, 0))
    return p


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
        sg = _sigmoid(pre)
        g = g * sg * (1.0 + pre * (1.0 - sg))
    dx = w0 * g + w1 * g1 + w2 * g2 + w3 * g3
    return g, dx, x0, x1, x2, x3


@triton.jit(do_not_specialize=["stride_x", "stride_dy", "stride_dx", "S"])
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
    sm, _ = _start_bits(cu_ptr, S, p, r1 - 3, 7, True)
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
            sm, _ = _start_bits(cu_ptr, S, p, t0 - 3, BT + 4, True)
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

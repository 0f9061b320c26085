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



@triton.jit
def _seq_bounds(cu_ptr, S, p, rows, lo, hi):
    """Start and end of each row's sequence as far as they matter for rows in [lo, hi): a start
    before ``lo`` reads ``lo - 1``, an end at or past ``hi`` reads ``hi``. ``p`` is the first index
    with cu[p] >= lo. ``rows`` is a full (BT, BD) tile so that no mask changes layout."""
    st = rows * 0 + (lo - 1)
    en = rows * 0 + hi
    c = tl.load(cu_ptr + tl.minimum(p, S))
    while (p <= S) & (c < hi):
        st = tl.where(rows >= c, c, st)
        en = tl.where((rows < c) & (c < en), c, en)
        p += 1
        c = tl.load(cu_ptr + tl.minimum(p, S))
    return st, en


@triton.jit
def _skip_to(cu_ptr, S, p, pos):
    """First index q >= p with cu[q] >= pos (S + 1 where none)."""
    c = tl.load(cu_ptr + tl.minimum(p, S))
    while (p <= S) & (c < pos):
        p += 1
        c = tl.load(cu_ptr + tl.minimum(p, S))
    return p


@triton.jit
def _shifted(x_ptr, rows, o: tl.constexpr, stride, offs_d, ok, st, en, T, USE: tl.constexpr):
    """(BT, BD) fp32 tile of x[rows + o], zero where that row is not in the row's own sequence."""
    if USE:
        ro = rows + o
        m = ok & (ro >= st) & (ro < en) & (ro >= 0) & (ro < T)
        return tl.load(x_ptr + ro.to(tl.int64) * stride + offs_d, mask=m, other=0.0).to(tl.float32)
    else:
        return tl.zeros(rows.shape, dtype=tl.float32)


@triton.jit
def _gate(dy_ptr, rows, j: tl.constexpr, stride, offs_d, ok, en, T, pre, SILU: tl.constexpr):
    """dL/d(pre-activation) of output row rows + j, zero where that row is not in the row's sequence."""
    rj = rows + j
    g = tl.load(dy_ptr + rj.to(tl.int64) * stride + offs_d, mask=ok & (rj < en) & (rj < T), other=0.0).to(tl.float32)
    if SILU:
        sg = 1.0 / (1.0 + tl.exp(-pre))
        g = g * sg * (1.0 + pre * (1.0 - sg))
    return g


@triton.jit
def _tap(w_ptr, offs_d, md, W: tl.constexpr, s: tl.constexpr):
    """(1, BD) fp32 weight of the tap that reads s rows back (zeros for s >= W)."""
    if s < W:
        return tl.load(w_ptr + offs_d * W + (W - 1 - s), mask=md, other=0.0).to(tl.float32)
    else:
        return tl.zeros(offs_d.shape, dtype=tl.float32)


@triton.jit
def _store_tap(base, Dm, acc, md, W: tl.constexpr, s: tl.constexpr):
    if s < W:
        tl.store(base + (W - 1 - s) * Dm, acc, mask=md)


@triton.jit(do_not_specialize=["stride_x", "stride_dy", "stride_dx"])
def _conv_bwd_rows_kernel(x_ptr, w_ptr, b_ptr, dy_ptr, cu_ptr, dx_ptr, part_ptr,
                          stride_x, stride_dy, stride_dx, T, Dm, S,
                          W: tl.constexpr, LOG_S: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                          BT: tl.constexpr, R: tl.constexpr, BD: tl.constexpr):
    """Backward over R tiles of BT rows (one channel per thread, a tile's rows in its registers).

    With w_s the weight of the tap that reads ``s`` rows back (zero for s >= W), output row t has
    pre[t] = b + sum_s w_s x[t - s]; then g = dy * silu'(pre), dx[t] = sum_s w_s g[t + s] and
    dw_s = sum_t g[t] x[t - s]. A tile loads x at offsets -3..3 and dy at 0..3 once each
    (masked to the row's own sequence) and recomputes the four pre-activations from them. dW and
    dbias are summed over the program's rows in registers and stored to ``part`` (row block, W + 1, D):
    the host sums row blocks (deterministic, no atomics). All vectors are (1, BD) or (BT, BD) tiles
    of one layout, so nothing is converted through shared memory.
    """
    rb = tl.program_id(0)
    offs_d = (tl.program_id(1) * BD + tl.arange(0, BD))[None, :]
    md = offs_d < Dm
    w0, w1 = _tap(w_ptr, offs_d, md, W, 0), _tap(w_ptr, offs_d, md, W, 1)
    w2, w3 = _tap(w_ptr, offs_d, md, W, 2), _tap(w_ptr, offs_d, md, W, 3)
    b = tl.zeros([1, BD], dtype=tl.float32)
    if HAS_BIAS:
        b = tl.load(b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    dw0 = tl.zeros([1, BD], dtype=tl.float32)
    dw1 = tl.zeros([1, BD], dtype=tl.float32)
    dw2 = tl.zeros([1, BD], dtype=tl.float32)
    dw3 = tl.zeros([1, BD], dtype=tl.float32)
    db = tl.zeros([1, BD], dtype=tl.float32)
    rr = tl.arange(0, BT)[:, None] + tl.zeros([BT, BD], dtype=tl.int32)
    r0 = rb * (BT * R)
    p = _lower_bound(cu_ptr, S, r0 - 3, LOG_S)
    for it in range(R):
        t0 = r0 + it * BT
        rows = t0 + rr
        ok = (rows < T) & md
        st, en = _seq_bounds(cu_ptr, S, p, rows, t0 - 3, t0 + BT + 3)
        xm3 = _shifted(x_ptr, rows, -3, stride_x, offs_d, ok, st, en, T, W > 3)
        xm2 = _shifted(x_ptr, rows, -2, stride_x, offs_d, ok, st, en, T, W > 2)
        xm1 = _shifted(x_ptr, rows, -1, stride_x, offs_d, ok, st, en, T, W > 1)
        x0 = _shifted(x_ptr, rows, 0, stride_x, offs_d, ok, st, en, T, True)
        xp1 = _shifted(x_ptr, rows, 1, stride_x, offs_d, ok, st, en, T, W > 1)
        xp2 = _shifted(x_ptr, rows, 2, stride_x, offs_d, ok, st, en, T, W > 2)
        xp3 = _shifted(x_ptr, rows, 3, stride_x, offs_d, ok, st, en, T, W > 3)
        g0 = _gate(dy_ptr, rows, 0, stride_dy, offs_d, ok, en, T, b + w0 * x0 + w1 * xm1 + w2 * xm2 + w3 * xm3, SILU)
        dx = g0 * w0
        if W > 1:
            dx += w1 * _gate(dy_ptr, rows, 1, stride_dy, offs_d, ok, en, T,
                             b + w0 * xp1 + w1 * x0 + w2 * xm1 + w3 * xm2, SILU)
        if W > 2:
            dx += w2 * _gate(dy_ptr, rows, 2, stride_dy, offs_d, ok, en, T,
                             b + w0 * xp2 + w1 * xp1 + w2 * x0 + w3 * xm1, SILU)
        if W > 3:
            dx += w3 * _gate(dy_ptr, rows, 3, stride_dy, offs_d, ok, en, T,
                             b + w0 * xp3 + w1 * xp2 + w2 * xp1 + w3 * x0, SILU)
        tl.store(dx_ptr + rows.to(tl.int64) * stride_dx + offs_d, dx, mask=ok)
        db += tl.sum(g0, axis=0, keep_dims=True)
        dw0 += tl.sum(g0 * x0, axis=0, keep_dims=True)
        dw1 += tl.sum(g0 * xm1, axis=0, keep_dims=True)
        dw2 += tl.sum(g0 * xm2, axis=0, keep_dims=True)
        dw3 += tl.sum(g0 * xm3, axis=0, keep_dims=True)
        p = _skip_to(cu_ptr, S, p, t0 + BT - 3)
    base = part_ptr + rb.to(tl.int64) * (W + 1) * Dm + offs_d
    _store_tap(base, Dm, dw0, md, W, 0)
    _store_tap(base, Dm, dw1, md, W, 1)
    _store_tap(base, Dm, dw2, md, W, 2)
    _store_tap(base, Dm, dw3, md, W, 3)
    tl.store(base + W * Dm, db, mask=md)


@triton.jit(do_not_specialize=["stride_x", "stride_y"])
def _conv_fwd_rows_kernel(x_ptr, w_ptr, b_ptr, y_ptr, cu_ptr, stride_x, stride_y, T, Dm, S,
                          W: tl.constexpr, LOG_S: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                          BT: tl.constexpr, R: tl.constexpr, BD: tl.constexpr):
    """Forward over R tiles of BT rows, in the layout of the row-block backward:
    y[t] = act(b + sum_s w_s x[t - s]), the taps masked to the row's own sequence."""
    rb = tl.program_id(0)
    offs_d = (tl.program_id(1) * BD + tl.arange(0, BD))[None, :]
    md = offs_d < Dm
    w0, w1 = _tap(w_ptr, offs_d, md, W, 0), _tap(w_ptr, offs_d, md, W, 1)
    w2, w3 = _tap(w_ptr, offs_d, md, W, 2), _tap(w_ptr, offs_d, md, W, 3)
    b = tl.zeros([1, BD], dtype=tl.float32)
    if HAS_BIAS:
        b = tl.load(b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    rr = tl.arange(0, BT)[:, None] + tl.zeros([BT, BD], dtype=tl.int32)
    r0 = rb * (BT * R)
    p = _lower_bound(cu_ptr, S, r0 - 3, LOG_S)
    for it in range(R):
        t0 = r0 + it * BT
        rows = t0 + rr
        ok = (rows < T) & md
        st, en = _seq_bounds(cu_ptr, S, p, rows, t0 - 3, t0 + BT)
        acc = b + w0 * _shifted(x_ptr, rows, 0, stride_x, offs_d, ok, st, en, T, True)
        acc += w1 * _shifted(x_ptr, rows, -1, stride_x, offs_d, ok, st, en, T, W > 1)
        acc += w2 * _shifted(x_ptr, rows, -2, stride_x, offs_d, ok, st, en, T, W > 2)
        acc += w3 * _shifted(x_ptr, rows, -3, stride_x, offs_d, ok, st, en, T, W > 3)
        if SILU:
            acc = acc / (1.0 + tl.exp(-acc))
        tl.store(y_ptr + rows.to(tl.int64) * stride_y + offs_d, acc, mask=ok)
        p = _skip_to(cu_ptr, S, p, t0 + BT - 3)

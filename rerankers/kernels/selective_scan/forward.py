"""Triton kernels of the varlen selective scan (Mamba-1), forward, packed channel-last layout.

Work unit: a *window* of ``W`` consecutive packed tokens (window ``w`` = tokens ``[w*W, w*W + W)``,
whatever sequences they belong to) times a block of ``BD`` channels. With ``RUNTIME_WL`` the window's length
is the run-time ``WL`` instead and the constexpr ``W`` only bounds the chunk loops (chunks past the window
are skipped): windows fitted to whole waves per T (:func:`.op.backward_window`, :func:`.op.forward_window`) then
share one compilation. A program walks its window in time with the state of its channels in
registers, **one channel per thread and all N states of that channel in the thread's registers**, so
the sum over states is in-thread and no step needs a shuffle or a barrier. Sequence boundaries inside
a window reset the state (a bit mask per chunk of ``BT`` tokens, read from ``cu_seqlens``); nothing is
tabulated on the host.

The layout comes from the memory ops: (N, D)-shaped buffers are read and written with the channel
as the contiguous dimension and an n-stride the compiler cannot see (``do_not_specialize``), and
the (BT, BD) row tiles use a row stride it cannot see, so it keeps one channel per thread (not
vectors of channels) and the BT rows of a chunk in that thread's registers.

A sequence that crosses a window boundary is carried, in three launches:
  1. ``_scan_fwd_local_kernel``: per window whose last sequence goes on past its end, the state at
     its end from a zero start at ``max(start of that sequence, window start)``, with the sum of
     delta over that piece (``flag`` 1: the piece starts at a sequence start; 2: the whole window
     is inside one sequence, so the carry into the window passes through, decayed by
     ``exp(A * sum(delta))``; 0: nothing goes on).
  2. ``_scan_chain_kernel``: a sequential pass over the windows per channel block that turns those
     into the state entering every window (``hin``; also used, reversed, by the backward).
  3. ``_scan_fwd_kernel``: the walk, from ``hin``; it stores the state at every chunk start
     (fp32, every ``BT`` tokens) for the backward. With ``ScanConfig.recompute_states`` it stores
     none and the backward keeps ``hin`` (the state at every window start, W / BT times smaller)
     instead; :func:`.backward._scan_states_kernel` rebuilds the chunk-start states from it.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..triton_utils import LOG2E, _lower_bound, _row, _sigmoid, _softplus, _start_bits, _tile

# A sequence start zeroes the state by the decay alone: the start token's delta is replaced by this in
# exp2(delta * A2), which is then exactly 0 (A2 is kept below -A2_FLOOR, so the product is <= -1e8), and
# 0 * h + b = b is what a state reset to zero gives, bitwise, for any finite h. One select of delta per
# channel and token instead of one of the state per channel, state and token (16 here). The price: A must be
# negative (Mamba's -exp(A_log) is; an A above -A2_FLOOR / log2(e) counts as that bound), and a non-finite state
# reaches the next sequences of its window (0 * inf), where a select would have stopped it.
RESET_DT: tl.constexpr = tl.constexpr(1e38)
A2_FLOOR: tl.constexpr = tl.constexpr(1e-30)


@triton.jit
def _bc_row(ptr, t, T, stride, offs_n, mn, EVEN_N: tl.constexpr):
    """(NP,) fp32: row ``t`` of B or C ((T, N), row stride ``stride``), every thread holding all of it. A row
    past a window's end is read too (row min(t, T - 1), never past the buffer): every use of it there is
    multiplied by that row's delta, which is 0, or masked. Unmasked where N is a power of two (EVEN_N), so
    that no load waits on a zeroed register pair."""
    p = ptr + tl.minimum(t, T - 1).to(tl.int64) * stride + offs_n
    if EVEN_N:
        return tl.load(p).to(tl.float32)
    else:
        return tl.load(p, mask=mn, other=0.0).to(tl.float32)


@triton.jit
def _decay_rates(A_ptr, hn_off, mdn):
    """(BD, NP) A * log2(e) from the states-major (N, D) A at ``hn_off``, kept below -A2_FLOOR (see RESET_DT; a
    NaN stays NaN)."""
    return tl.minimum(tl.load(A_ptr + hn_off, mask=mdn, other=0.0) * LOG2E, -A2_FLOOR,
                      propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _reset_dt(dt, sm, bit):
    """delta of a token for its decay: :data:`RESET_DT` where bit ``bit`` of the start mask ``sm`` is set."""
    return tl.where(((sm >> bit) & 1) != 0, RESET_DT, dt)


@triton.jit
def _chunk(t0, rr, end, md):
    """Rows t0 + rr of a chunk that ends at ``end``: int64 row indices, (BT, 1) row mask, (BT, BD) mask."""
    rows = t0 + rr
    valid = (rows < end)[:, None]
    return rows.to(tl.int64), valid, valid & md[None, :]


@triton.jit
def _dt_tile(dl_t, bias, valid, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta after bias and softplus; 0 on rows past the window (the state then stays as it is)."""
    if HAS_BIAS:
        dl_t = dl_t + bias[None, :]
    if SOFTPLUS:
        dl_t = _softplus(dl_t)
    return tl.where(valid, dl_t, 0.0)


@triton.jit
def _window_bounds(T, WL, W: tl.constexpr, RUNTIME_WL: tl.constexpr):
    """Window ``w = program_id(0)``: (w, w0, w1), its tokens [w0, w1). RUNTIME_WL: the window's length is ``WL``
    (run time; ``W`` only bounds the chunk loops), else the constexpr ``W`` (a power of two there compiles to
    fewer registers: 119 against 143 for the forward walk, sm_90)."""
    w = tl.program_id(0)
    if RUNTIME_WL:
        w0 = w * WL
        w1 = tl.minimum(w0 + WL, T)
    else:
        w0 = w * W
        w1 = tl.minimum(w0 + W, T)
    return w, w0, w1


@triton.jit
def _window(T, WL, W: tl.constexpr, RUNTIME_WL: tl.constexpr, BD: tl.constexpr, Dm, N, NP: tl.constexpr):
    """Window ``w`` of the program (:func:`_window_bounds`): tokens [w0, w1), with its channels / states and
    their masks."""
    w, w0, w1 = _window_bounds(T, WL, W, RUNTIME_WL)
    offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
    md = offs_d < Dm
    offs_n = tl.arange(0, NP)
    mn = offs_n < N
    return w, w0, w1, offs_d, md, offs_n, mn


@triton.jit
def _params(A_ptr, bias_ptr, s_h, offs_d, md, offs_n, mn, BD: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Mask and offsets of the (BD, N) state tiles in (N, D) buffers (n-stride ``s_h``), A * log2(e)
    and delta_bias (zeros where absent)."""
    mdn = md[:, None] & mn[None, :]
    hn_off = offs_n[None, :] * s_h + offs_d[:, None]
    A2 = _decay_rates(A_ptr, hn_off, mdn)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BD], dtype=tl.float32)
    return mdn, hn_off, A2, bias


@triton.jit(do_not_specialize=["s_u", "s_dl", "s_h", "S", "WL"])
def _scan_fwd_local_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, bias_ptr, send_ptr, dts_ptr, flag_ptr, cu_ptr,
                           s_u, s_dl, s_B, s_h, T, Dm, N, S, WL,
                           HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                           LOG_S: tl.constexpr, W: tl.constexpr, RUNTIME_WL: tl.constexpr, BT: tl.constexpr,
                           BD: tl.constexpr, NP: tl.constexpr, EVEN_N: tl.constexpr):
    """Per window: the state at its end of the sequence that goes on past it (from zero at the
    piece's start), the piece's sum of delta, and the flag (module docstring)."""
    w, w0, w1, offs_d, md, offs_n, mn = _window(T, WL, W, RUNTIME_WL, BD, Dm, N, NP)
    p = _lower_bound(cu_ptr, S, w1, LOG_S)
    goes_on = (w1 < T) & (tl.load(cu_ptr + p) != w1)
    if tl.program_id(1) == 0:
        last_start = tl.load(cu_ptr + tl.maximum(p - 1, 0))
        tl.store(flag_ptr + w, tl.where(goes_on, tl.where(last_start >= w0, 1, 2), 0))
    if goes_on:
        ps = tl.maximum(tl.load(cu_ptr + p - 1), w0)
        mdn, hn_off, A2, bias = _params(A_ptr, bias_ptr, s_h, offs_d, md, offs_n, mn, BD, HAS_BIAS)
        h = tl.zeros([BD, NP], dtype=tl.float32)
        dts = tl.zeros([BD], dtype=tl.float32)
        rr = tl.arange(0, BT)
        for c in range(W // BT):  # (a static trip count: the interpreter needs one)
            t0 = ps + c * BT
            if t0 < w1:
                r64, valid, m2 = _chunk(t0, rr, w1, md)
                u_t = _tile(u_ptr, r64, s_u, offs_d, m2)
                dt_t = _dt_tile(_tile(dl_ptr, r64, s_dl, offs_d, m2), bias, valid, HAS_BIAS, SOFTPLUS)
                for i in tl.static_range(BT):
                    dt = _row(dt_t, rr, i)
                    Bt = _bc_row(B_ptr, t0 + i, T, s_B, offs_n, mn, EVEN_N)
                    dts += dt
                    h = tl.exp2(dt[:, None] * A2) * h + (dt * _row(u_t, rr, i))[:, None] * Bt[None, :]
        tl.store(send_ptr + w.to(tl.int64) * Dm * N + hn_off, h, mask=mdn)
        tl.store(dts_ptr + w.to(tl.int64) * Dm + offs_d, dts, mask=md)


@triton.jit(do_not_specialize=["s_h", "n_win"])
def _scan_chain_kernel(vec_ptr, dts_ptr, flag_ptr, A_ptr, out_ptr, s_h, n_win, Dm, N,
                       REVERSE: tl.constexpr, G: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr):
    """Carries over windows, one program per channel block, sequential over the windows (G windows'
    loads issued together, then G updates).

    Forward:  out[0] = 0, out[w+1] = (flag[w] == 2 ? exp(A*dts[w]) * out[w] : 0) + (flag[w] ? vec[w] : 0)
    Reverse:  out[n-1] = 0, out[w-1] = (flag[w] == 2 ? exp(A*dts[w]) * out[w] : 0) + (flag[w] ? vec[w] : 0)
    (n, D) buffers are (n_win, N, Dm) with the n-stride ``s_h``.
    """
    offs_d = tl.program_id(0) * BD + tl.arange(0, BD)
    md = offs_d < Dm
    offs_n = tl.arange(0, NP)
    mdn = md[:, None] & (offs_n < N)[None, :]
    hn_off = offs_n[None, :] * s_h + offs_d[:, None]
    A2 = _decay_rates(A_ptr, hn_off, mdn)
    h = tl.zeros([BD, NP], dtype=tl.float32)
    first = n_win - 1 if REVERSE else 0
    tl.store(out_ptr + first * Dm * N + hn_off, h, mask=mdn)
    j0 = n_win * 0
    while j0 < n_win - 1:
        fs = ()
        vs = ()
        ds = ()
        for g in tl.static_range(G):
            j = j0 + g
            w = n_win - 1 - j if REVERSE else j
            f = tl.load(flag_ptr + w, mask=j < n_win - 1, other=0)
            fs = fs + (f,)
            vs = vs + (tl.load(vec_ptr + w.to(tl.int64) * Dm * N + hn_off, mask=mdn & (f > 0), other=0.0),)
            ds = ds + (tl.load(dts_ptr + w.to(tl.int64) * Dm + offs_d, mask=md & (f == 2), other=0.0),)
        for g in tl.static_range(G):
            j = j0 + g
            w = n_win - 1 - j if REVERSE else j
            dst = w - 1 if REVERSE else w + 1
            h = tl.where(fs[g] == 2, tl.exp2(ds[g][:, None] * A2) * h, 0.0) + vs[g]
            tl.store(out_ptr + dst.to(tl.int64) * Dm * N + hn_off, h, mask=mdn & (j < n_win - 1))
        j0 += G


@triton.jit(do_not_specialize=["s_u", "s_dl", "s_z", "s_y", "s_h", "S", "WL"])
def _scan_fwd_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
                     hin_ptr, states_ptr, cu_ptr,
                     s_u, s_dl, s_B, s_C, s_z, s_y, s_h, T, Dm, N, S, WL,
                     HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SOFTPLUS: tl.constexpr, LOG_S: tl.constexpr, W: tl.constexpr, RUNTIME_WL: tl.constexpr,
                     BT: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, EVEN_N: tl.constexpr,
                     STORE_STATES: tl.constexpr):
    """The forward walk of one window from the state entering it (``hin``). STORE_STATES: store the
    state at every chunk start (False: ``ScanConfig.recompute_states``, the backward recomputes them
    from ``hin``; ``states_ptr`` is then not touched)."""
    w, w0, w1, offs_d, md, offs_n, mn = _window(T, WL, W, RUNTIME_WL, BD, Dm, N, NP)
    mdn, hn_off, A2, bias = _params(A_ptr, bias_ptr, s_h, offs_d, md, offs_n, mn, BD, HAS_BIAS)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    h = tl.load(hin_ptr + w.to(tl.int64) * Dm * N + hn_off, mask=mdn, other=0.0)
    p = _lower_bound(cu_ptr, S, w0, LOG_S)
    rr = tl.arange(0, BT)
    for c in range(W // BT):
        t0 = w0 + c * BT
        if t0 < w1:
            if STORE_STATES:
                tl.store(states_ptr + (t0 // BT).to(tl.int64) * Dm * N + hn_off, h, mask=mdn)
            r64, valid, m2 = _chunk(t0, rr, w1, md)
            u_t = _tile(u_ptr, r64, s_u, offs_d, m2)
            dt_t = _dt_tile(_tile(dl_ptr, r64, s_dl, offs_d, m2), bias, valid, HAS_BIAS, SOFTPLUS)
            if HAS_Z:
                z_t = _tile(z_ptr, r64, s_z, offs_d, m2)
                gate_t = z_t * _sigmoid(z_t)
            sm, p = _start_bits(cu_ptr, S, p, t0, BT, False)
            y_t = tl.zeros([BT, BD], dtype=tl.float32)
            for i in tl.static_range(BT):
                Bt = _bc_row(B_ptr, t0 + i, T, s_B, offs_n, mn, EVEN_N)
                Ct = _bc_row(C_ptr, t0 + i, T, s_C, offs_n, mn, EVEN_N)
                dt = _row(dt_t, rr, i)
                u = _row(u_t, rr, i)
                h = tl.exp2(_reset_dt(dt, sm, i)[:, None] * A2) * h + (dt * u)[:, None] * Bt[None, :]
                y = tl.sum(h * Ct[None, :], axis=1)
                if HAS_D:
                    y += Dv * u
                if HAS_Z:
                    y = y * _row(gate_t, rr, i)
                y_t = tl.where(rr[:, None] == i, y[None, :], y_t)
            tl.store(y_ptr + r64[:, None] * s_y + offs_d[None, :], y_t, mask=m2)

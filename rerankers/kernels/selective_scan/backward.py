"""Triton kernels of the varlen selective scan, backward (layout and windows: :mod:`.forward`).

Three launches, mirroring the forward (four with ``ScanConfig.recompute_states``: first
``_scan_states_kernel`` rebuilds the chunk-start states from the window-start states the forward kept):
  1. ``_scan_bwd_local_kernel``: per window whose first token continues a sequence from the window
     before, the gradient w.r.t. the state entering the window from the window's own tokens of that
     sequence, ``sum_t exp(A * cumsum(delta)_t) * g_t C_t``, and the piece's sum of delta (flag 2: the
     whole window is that sequence, so gradient from later windows passes through).
  2. ``_scan_chain_kernel`` (reversed): the gradient w.r.t. the state at every window's last token.
  3. ``_scan_bwd_kernel``: per window, chunks of BT tokens in reverse, and in a chunk sub-chunks of
     BH tokens in reverse. A sub-chunk recomputes its BH states forward from the state the forward
     stored at the chunk's start, keeping them in registers (a tuple of (BD, N) tiles), then steps
     backwards with the state gradient ``q`` in registers:
     ``q_t = g_t C_t + carry``, ``d log a_t = q_t (h_t - b_t)``, ``carry = a_t q_t`` (zero across
     a sequence start). dB and dC sum over channels (one reduction per step over the program's
     channels, added with atomics into (T, N) fp32: a shuffle butterfly per warp on the GPU);
     dA, dD and d(delta_bias) sum over the window in
     registers and are added once.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..triton_utils import _lower_bound, _row, _sigmoid, _start_bits, _start_bits_down, _tile
from .forward import LOG2E, _bc_row, _chunk, _dt_tile, _params, _reset_dt, _window


@triton.jit(do_not_specialize=["s_dy", "s_dl", "s_z", "s_h", "S", "WL"])
def _scan_bwd_local_kernel(dy_ptr, dl_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, gin_ptr, dts_ptr, flag_ptr, cu_ptr,
                           s_dy, s_dl, s_C, s_z, s_h, T, Dm, N, S, WL,
                           HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                           LOG_S: tl.constexpr, W: tl.constexpr, RUNTIME_WL: tl.constexpr, BT: tl.constexpr,
                           BD: tl.constexpr, NP: tl.constexpr, EVEN_N: tl.constexpr):
    w, w0, w1, offs_d, md, offs_n, mn = _window(T, WL, W, RUNTIME_WL, BD, Dm, N, NP)
    p = _lower_bound(cu_ptr, S, w0, LOG_S)
    nxt = tl.load(cu_ptr + p)  # first sequence start at or after w0
    carried = (w0 > 0) & (nxt != w0)
    if tl.program_id(1) == 0:
        tl.store(flag_ptr + w, tl.where(carried, tl.where(nxt >= w1, 2, 1), 0))
    if carried:
        pe = tl.minimum(nxt, w1)
        mdn, hn_off, A2, bias = _params(A_ptr, bias_ptr, s_h, offs_d, md, offs_n, mn, BD, HAS_BIAS)
        G = tl.zeros([BD, NP], dtype=tl.float32)
        cum = tl.zeros([BD], dtype=tl.float32)
        rr = tl.arange(0, BT)
        for c in range(W // BT):
            t0 = w0 + c * BT
            if t0 < pe:
                r64, valid, m2 = _chunk(t0, rr, pe, md)
                dt_t = _dt_tile(_tile(dl_ptr, r64, s_dl, offs_d, m2), bias, valid, HAS_BIAS, SOFTPLUS)
                g_t = _tile(dy_ptr, r64, s_dy, offs_d, m2)
                if HAS_Z:
                    z_t = _tile(z_ptr, r64, s_z, offs_d, m2)
                    g_t = g_t * z_t * _sigmoid(z_t)
                for i in tl.static_range(BT):
                    Ct = _bc_row(C_ptr, t0 + i, T, s_C, offs_n, mn, EVEN_N)
                    cum += _row(dt_t, rr, i)
                    G += tl.exp2(cum[:, None] * A2) * _row(g_t, rr, i)[:, None] * Ct[None, :]
        tl.store(gin_ptr + w.to(tl.int64) * Dm * N + hn_off, G, mask=mdn)
        tl.store(dts_ptr + w.to(tl.int64) * Dm + offs_d, cum, mask=md)


@triton.jit
def _add2(a, b, c, d):
    return a + c, b + d


@triton.jit
def _shfl_xor(x, MASK: tl.constexpr):
    """Each lane gets ``x`` of lane ``lane ^ MASK`` (per register; all lanes run it together)."""
    return tl.inline_asm_elementwise(f"shfl.sync.bfly.b32 $0, $1, {MASK}, 0x1f, -1;", "=r,r",
                                     [x.to(tl.uint32, bitcast=True)], dtype=tl.uint32, is_pure=True,
                                     pack=1).to(tl.float32, bitcast=True)


@triton.jit
def _bfly_round(x, lane, BIT: tl.constexpr):
    """Halve the values per lane: keep the half that this lane's bit BIT selects (odd or even
    column), add the partner lane's copy of it. (BD, 2k) -> (BD, k)."""
    even, odd = tl.split(tl.reshape(x, [x.shape[0], x.shape[1] // 2, 2]))
    b = ((lane >> BIT) & 1)[:, None] != 0
    return tl.where(b, odd, even) + _shfl_xor(tl.where(b, even, odd), 1 << BIT)


@triton.jit
def _warp_sums(X, Y, offs_d):
    """Sums over the 32 channels (lanes) of each warp of two (BD, 16) tiles, one channel per lane,
    with 31 shuffles (a butterfly that halves the values at each step) instead of 5 per value.
    Returns (BD,) values: lane l holds the sum of ``X`` (l < 16) or ``Y`` (l >= 16) at state
    ``n = bit-reverse of (l & 15)``, with which (0 X, 1 Y) and n per lane."""
    lane = offs_d % 32
    b = ((lane >> 4) & 1)[:, None] != 0
    Z = tl.where(b, Y, X) + _shfl_xor(tl.where(b, X, Y), 16)
    Z = _bfly_round(Z, lane, 3)
    Z = _bfly_round(Z, lane, 2)
    Z = _bfly_round(Z, lane, 1)
    Z = _bfly_round(Z, lane, 0)
    l15 = lane & 15
    n = ((l15 >> 3) & 1) | (((l15 >> 2) & 1) << 1) | (((l15 >> 1) & 1) << 2) | ((l15 & 1) << 3)
    return tl.reshape(Z, [X.shape[0]]), lane >> 4, n


@triton.jit
def _advance(h, u_ptr, dl_ptr, B_ptr, A2, bias, sm, t0, w1, T, rr, offs_d, md, offs_n, mn, s_u, s_dl, s_B,
             BIT0: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BH: tl.constexpr,
             EVEN_N: tl.constexpr):
    """The state after the BH tokens from t0 (bits BIT0.. of the start mask ``sm``), from h."""
    r64, valid, m2 = _chunk(t0, rr, w1, md)
    u_t = _tile(u_ptr, r64, s_u, offs_d, m2)
    dt_t = _dt_tile(_tile(dl_ptr, r64, s_dl, offs_d, m2), bias, valid, HAS_BIAS, SOFTPLUS)
    for i in tl.static_range(BH):
        Bt = _bc_row(B_ptr, t0 + i, T, s_B, offs_n, mn, EVEN_N)
        dt = _row(dt_t, rr, i)
        h = tl.exp2(_reset_dt(dt, sm, BIT0 + i)[:, None] * A2) * h + (dt * _row(u_t, rr, i))[:, None] * Bt[None, :]
    return h


@triton.jit(do_not_specialize=["s_u", "s_dl", "s_h", "S", "WL"])
def _scan_states_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, bias_ptr, hin_ptr, states_ptr, cu_ptr,
                        s_u, s_dl, s_B, s_h, T, Dm, N, S, WL,
                        HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, LOG_S: tl.constexpr, W: tl.constexpr,
                        RUNTIME_WL: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
                        EVEN_N: tl.constexpr):
    """``ScanConfig.recompute_states``: the state at every chunk start, as the forward walk would
    have stored it, rebuilt from the state entering each window of the forward (``hin``; same
    windows ``WL`` and chunks ``BT`` as the forward, the same recurrence): the forward walk without
    C, D, z and y. Runs once before the backward walk, into a buffer that lives only as long as it."""
    w, w0, w1, offs_d, md, offs_n, mn = _window(T, WL, W, RUNTIME_WL, BD, Dm, N, NP)
    mdn, hn_off, A2, bias = _params(A_ptr, bias_ptr, s_h, offs_d, md, offs_n, mn, BD, HAS_BIAS)
    h = tl.load(hin_ptr + w.to(tl.int64) * Dm * N + hn_off, mask=mdn, other=0.0)
    p = _lower_bound(cu_ptr, S, w0, LOG_S)
    rr = tl.arange(0, BT)
    for c in range(W // BT):
        t0 = w0 + c * BT
        if t0 < w1:
            tl.store(states_ptr + (t0 // BT).to(tl.int64) * Dm * N + hn_off, h, mask=mdn)
            if t0 + BT < w1:  # the state after the window's last chunk is not needed
                sm, p = _start_bits(cu_ptr, S, p, t0, BT, False)
                h = _advance(h, u_ptr, dl_ptr, B_ptr, A2, bias, sm, t0, w1, T, rr, offs_d, md, offs_n, mn,
                             s_u, s_dl, s_B, 0, HAS_BIAS, SOFTPLUS, BT, EVEN_N)


@triton.jit(do_not_specialize=["s_dy", "s_u", "s_dl", "s_z", "s_du", "s_ddl", "s_dz", "s_h", "S", "WL"])
def _scan_bwd_kernel(dy_ptr, u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
                     states_ptr, gout_ptr, cu_ptr,
                     du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
                     s_dy, s_u, s_dl, s_B, s_C, s_z, s_du, s_ddl, s_dz, s_h,
                     T, Dm, N, S, WL,
                     HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SOFTPLUS: tl.constexpr, LOG_S: tl.constexpr, W: tl.constexpr, RUNTIME_WL: tl.constexpr,
                     BT: tl.constexpr, BH: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, EVEN_N: tl.constexpr,
                     BFLY: tl.constexpr):
    """Per chunk of BT tokens (in reverse), per sub-chunk of BH tokens (in reverse): advance from the
    chunk's stored start state to the sub-chunk, recompute its BH states keeping them, then step
    backwards through them. BH < BT trades recomputation for registers. BFLY (N = 16, compiled
    only: the interpreter has no inline PTX): dB/dC summed over each warp's channels by the shuffle
    butterfly of :func:`_warp_sums` and added by every warp, instead of ``tl.reduce`` over the program."""
    w, w0, w1, offs_d, md, offs_n, mn = _window(T, WL, W, RUNTIME_WL, BD, Dm, N, NP)
    mdn, hn_off, A2, bias = _params(A_ptr, bias_ptr, s_h, offs_d, md, offs_n, mn, BD, HAS_BIAS)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    carry = tl.load(gout_ptr + w.to(tl.int64) * Dm * N + hn_off, mask=mdn, other=0.0)
    dA_acc = tl.zeros([BD, NP], dtype=tl.float32)
    dD_acc = tl.zeros([BD], dtype=tl.float32)
    db_acc = tl.zeros([BD], dtype=tl.float32)
    rr = tl.arange(0, BH)
    # q: one past the last cu index below the current chunk's end (walked down chunk by chunk)
    q = _lower_bound(cu_ptr, S, w1, LOG_S)
    for cc in range(W // BT):
        t0 = w0 + (W // BT - 1 - cc) * BT
        if t0 < w1:
            sm, q = _start_bits_down(cu_ptr, q, t0)
            h0 = tl.load(states_ptr + (t0 // BT).to(tl.int64) * Dm * N + hn_off, mask=mdn, other=0.0)
            for j in tl.static_range(BT // BH - 1, -1, -1):
                h = h0
                for k in tl.static_range(j):
                    h = _advance(h, u_ptr, dl_ptr, B_ptr, A2, bias, sm, t0 + k * BH, w1, T, rr, offs_d, md, offs_n,
                                 mn, s_u, s_dl, s_B, k * BH, HAS_BIAS, SOFTPLUS, BH, EVEN_N)
                ts = t0 + j * BH
                r64, valid, m2 = _chunk(ts, rr, w1, md)
                u_t = _tile(u_ptr, r64, s_u, offs_d, m2)
                dl_t = _tile(dl_ptr, r64, s_dl, offs_d, m2)
                dy_t = _tile(dy_ptr, r64, s_dy, offs_d, m2)
                dt_t = _dt_tile(dl_t, bias, valid, HAS_BIAS, SOFTPLUS)
                if HAS_Z:
                    z_t = _tile(z_ptr, r64, s_z, offs_d, m2)
                # recompute the sub-chunk's states, keeping them
                hs = ()
                for i in tl.static_range(BH):
                    Bt = _bc_row(B_ptr, ts + i, T, s_B, offs_n, mn, EVEN_N)
                    dt = _row(dt_t, rr, i)
                    h = (tl.exp2(_reset_dt(dt, sm, j * BH + i)[:, None] * A2) * h
                         + (dt * _row(u_t, rr, i))[:, None] * Bt[None, :])
                    hs = hs + (h,)
                for i in tl.static_range(BH - 1, -1, -1):
                    m = ts + i < w1
                    t64 = (ts + i).to(tl.int64)
                    Bt = _bc_row(B_ptr, ts + i, T, s_B, offs_n, mn, EVEN_N)
                    Ct = _bc_row(C_ptr, ts + i, T, s_C, offs_n, mn, EVEN_N)
                    dt = _row(dt_t, rr, i)
                    u = _row(u_t, rr, i)
                    dy = _row(dy_t, rr, i)
                    if HAS_Z:
                        zz = _row(z_t, rr, i)
                        sz = _sigmoid(zz)
                        g = dy * zz * sz
                    else:
                        g = dy
                    h = hs[i]
                    dtu = dt * u
                    qs = g[:, None] * Ct[None, :] + carry
                    dla = qs * (h - dtu[:, None] * Bt[None, :])
                    dA_acc += dla * dt[:, None]
                    qB = tl.sum(qs * Bt[None, :], axis=1)
                    ddt = tl.sum(dla * A2, axis=1) * (1.0 / LOG2E) + qB * u
                    du = qB * dt
                    if HAS_D:
                        du += g * Dv
                        dD_acc += g * u
                    if BFLY:
                        v, which, n_l = _warp_sums(qs * dtu[:, None], h * g[:, None], offs_d)
                        tl.atomic_add(tl.where(which == 0, dB_ptr, dC_ptr) + t64 * N + n_l, v, mask=(n_l < N) & m,
                                      sem="relaxed")
                    else:
                        dB_row, dC_row = tl.reduce((qs * dtu[:, None], h * g[:, None]), 0, _add2)
                        tl.atomic_add(dB_ptr + t64 * N + offs_n, dB_row, mask=mn & m, sem="relaxed")
                        tl.atomic_add(dC_ptr + t64 * N + offs_n, dC_row, mask=mn & m, sem="relaxed")
                    carry = tl.exp2(_reset_dt(dt, sm, j * BH + i)[:, None] * A2) * qs  # 0 across a start
                    if HAS_Z:
                        ypre = tl.sum(h * Ct[None, :], axis=1)
                        if HAS_D:
                            ypre += Dv * u
                        tl.store(dz_ptr + t64 * s_dz + offs_d, dy * ypre * sz * (1.0 + zz * (1.0 - sz)), mask=md & m)
                    if SOFTPLUS:
                        x = _row(dl_t, rr, i)
                        if HAS_BIAS:
                            x = x + bias
                        ddt = ddt * _sigmoid(x)
                    ddt = tl.where(m, ddt, 0.0)
                    db_acc += ddt
                    tl.store(du_ptr + t64 * s_du + offs_d, du, mask=md & m)
                    tl.store(ddl_ptr + t64 * s_ddl + offs_d, ddt, mask=md & m)
    tl.atomic_add(dA_ptr + hn_off, dA_acc, mask=mdn, sem="relaxed")
    if HAS_D:
        tl.atomic_add(dD_ptr + offs_d, dD_acc, mask=md, sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + offs_d, db_acc, mask=md, sem="relaxed")

"""Triton kernels of the varlen selective scan, backward (layout and windows: :mod:`.scan_triton`).

Three launches, mirroring the forward:
  1. ``_scan_bwd_local_kernel``: per window whose first token continues a sequence from the window
     before, the gradient w.r.t. the state entering the window from the window's own tokens of that
     sequence, ``sum_t exp(A * cumsum(delta)_t) * g_t C_t``, and the piece's sum of delta (flag 2: the
     whole window is that sequence, so gradient from later windows passes through).
  2. ``_scan_chain_kernel`` (reversed): the gradient w.r.t. the state at every window's last token.
  3. ``_scan_bwd_kernel``: per window, chunks of BT tokens in reverse. A chunk recomputes its BT
     states forward from the state the forward stored at its start, keeping them in registers (a
     tuple of (BD, N) tiles), then steps backwards with the state gradient ``q`` in registers:
     ``q_t = g_t C_t + carry``, ``d log a_t = q_t (h_t - b_t)``, ``carry = a_t q_t`` (zero across
     a sequence start). dB and dC sum over channels (one reduction per step over the program's
     channels, added with atomics into (T, N) fp32); dA, dD and d(delta_bias) sum over the window in
     registers and are added once.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .scan_triton import LOG2E, _dt_tile, _lower_bound, _row, _sigmoid, _tile, _window


@triton.jit(do_not_specialize=["s_dy", "s_dl", "s_z", "s_h"])
def _scan_bwd_local_kernel(dy_ptr, dl_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, gin_ptr, dts_ptr, flag_ptr, cu_ptr,
                           s_dy, s_dl, s_C, s_z, s_h, T, Dm, N, S,
                           HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                           LOG_S: tl.constexpr, W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr):
    w, w0, w1, offs_d, md, offs_n, mn = _window(T, W, BD, Dm, N, NP)
    p = _lower_bound(cu_ptr, S, w0, LOG_S)
    nxt = tl.load(cu_ptr + p)  # first sequence start at or after w0
    carried = (w0 > 0) & (nxt != w0)
    if tl.program_id(1) == 0:
        tl.store(flag_ptr + w, tl.where(carried, tl.where(nxt >= w1, 2, 1), 0))
    if carried:
        pe = tl.minimum(nxt, w1)
        mdn = md[:, None] & mn[None, :]
        hn_off = offs_n[None, :] * s_h + offs_d[:, None]
        A2 = tl.load(A_ptr + hn_off, mask=mdn, other=0.0) * LOG2E
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
        else:
            bias = tl.zeros([BD], dtype=tl.float32)
        G = tl.zeros([BD, NP], dtype=tl.float32)
        cum = tl.zeros([BD], dtype=tl.float32)
        rr = tl.arange(0, BT)
        for c in range(W // BT):
            t0 = w0 + c * BT
            if t0 < pe:
                rows = t0 + rr
                valid = (rows < pe)[:, None]
                r64 = rows.to(tl.int64)
                m2 = valid & md[None, :]
                dt_t = _dt_tile(_tile(dl_ptr, r64, s_dl, offs_d, m2), bias, valid, HAS_BIAS, SOFTPLUS)
                g_t = _tile(dy_ptr, r64, s_dy, offs_d, m2)
                if HAS_Z:
                    z_t = _tile(z_ptr, r64, s_z, offs_d, m2)
                    g_t = g_t * z_t * _sigmoid(z_t)
                for i in tl.static_range(BT):
                    m = t0 + i < pe
                    Ct = tl.load(C_ptr + (t0 + i).to(tl.int64) * s_C + offs_n, mask=mn & m, other=0.0).to(tl.float32)
                    cum += _row(dt_t, rr, i)
                    G += tl.exp2(cum[:, None] * A2) * _row(g_t, rr, i)[:, None] * Ct[None, :]
        tl.store(gin_ptr + w.to(tl.int64) * Dm * N + hn_off, G, mask=mdn)
        tl.store(dts_ptr + w.to(tl.int64) * Dm + offs_d, cum, mask=md)


@triton.jit
def _add2(a, b, c, d):
    return a + c, b + d


@triton.jit(do_not_specialize=["s_dy", "s_u", "s_dl", "s_z", "s_du", "s_ddl", "s_dz", "s_h"])
def _scan_bwd_kernel(dy_ptr, u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
                     states_ptr, gout_ptr, cu_ptr,
                     du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
                     s_dy, s_u, s_dl, s_B, s_C, s_z, s_du, s_ddl, s_dz, s_h,
                     T, Dm, N, S,
                     HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SOFTPLUS: tl.constexpr, LOG_S: tl.constexpr, W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
                     NP: tl.constexpr):
    w, w0, w1, offs_d, md, offs_n, mn = _window(T, W, BD, Dm, N, NP)
    mdn = md[:, None] & mn[None, :]
    hn_off = offs_n[None, :] * s_h + offs_d[:, None]
    A2 = tl.load(A_ptr + hn_off, mask=mdn, other=0.0) * LOG2E
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    carry = tl.load(gout_ptr + w.to(tl.int64) * Dm * N + hn_off, mask=mdn, other=0.0)
    dA_acc = tl.zeros([BD, NP], dtype=tl.float32)
    dD_acc = tl.zeros([BD], dtype=tl.float32)
    db_acc = tl.zeros([BD], dtype=tl.float32)
    rr = tl.arange(0, BT)
    # q: one past the last cu index below the current chunk's end (walked down chunk by chunk)
    q = _lower_bound(cu_ptr, S, w1, LOG_S)
    for cc in range(W // BT):
        t0 = w0 + (W // BT - 1 - cc) * BT
        if t0 < w1:
            sm = t0 * 0
            c = tl.load(cu_ptr + tl.maximum(q - 1, 0))
            while (q > 0) & (c >= t0):
                sm = sm | (1 << (c - t0))
                q -= 1
                c = tl.load(cu_ptr + tl.maximum(q - 1, 0))
            rows = t0 + rr
            valid = (rows < w1)[:, None]
            r64 = rows.to(tl.int64)
            m2 = valid & md[None, :]
            u_t = _tile(u_ptr, r64, s_u, offs_d, m2)
            dl_t = _tile(dl_ptr, r64, s_dl, offs_d, m2)
            dy_t = _tile(dy_ptr, r64, s_dy, offs_d, m2)
            dt_t = _dt_tile(dl_t, bias, valid, HAS_BIAS, SOFTPLUS)
            if SOFTPLUS:
                if HAS_BIAS:
                    dsp_t = _sigmoid(dl_t + bias[None, :])
                else:
                    dsp_t = _sigmoid(dl_t)
            if HAS_Z:
                z_t = _tile(z_ptr, r64, s_z, offs_d, m2)
                sz_t = _sigmoid(z_t)
                g_t = dy_t * z_t * sz_t
            else:
                g_t = dy_t
            # recompute the chunk's states forward, keeping them
            h = tl.load(states_ptr + (t0 // BT).to(tl.int64) * Dm * N + hn_off, mask=mdn, other=0.0)
            hs = ()
            for i in tl.static_range(BT):
                m = t0 + i < w1
                Bt = tl.load(B_ptr + (t0 + i).to(tl.int64) * s_B + offs_n, mask=mn & m, other=0.0).to(tl.float32)
                dt = _row(dt_t, rr, i)
                h = tl.where(((sm >> i) & 1) != 0, 0.0, h)
                h = tl.exp2(dt[:, None] * A2) * h + (dt * _row(u_t, rr, i))[:, None] * Bt[None, :]
                hs = hs + (h,)
            du_t = tl.zeros([BT, BD], dtype=tl.float32)
            ddl_t = tl.zeros([BT, BD], dtype=tl.float32)
            if HAS_Z:
                dz_t = tl.zeros([BT, BD], dtype=tl.float32)
            for i in tl.static_range(BT - 1, -1, -1):
                m = t0 + i < w1
                t64 = (t0 + i).to(tl.int64)
                Bt = tl.load(B_ptr + t64 * s_B + offs_n, mask=mn & m, other=0.0).to(tl.float32)
                Ct = tl.load(C_ptr + t64 * s_C + offs_n, mask=mn & m, other=0.0).to(tl.float32)
                dt = _row(dt_t, rr, i)
                u = _row(u_t, rr, i)
                g = _row(g_t, rr, i)
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
                dB_row, dC_row = tl.reduce((qs * dtu[:, None], h * g[:, None]), 0, _add2)
                tl.atomic_add(dB_ptr + t64 * N + offs_n, dB_row, mask=mn & m, sem="relaxed")
                tl.atomic_add(dC_ptr + t64 * N + offs_n, dC_row, mask=mn & m, sem="relaxed")
                carry = tl.where(((sm >> i) & 1) != 0, 0.0, tl.exp2(dt[:, None] * A2) * qs)
                if HAS_Z:
                    ypre = tl.sum(h * Ct[None, :], axis=1)
                    if HAS_D:
                        ypre += Dv * u
                    sz = _row(sz_t, rr, i)
                    dz = _row(dy_t, rr, i) * ypre * sz * (1.0 + _row(z_t, rr, i) * (1.0 - sz))
                    dz_t = tl.where(rr[:, None] == i, dz[None, :], dz_t)
                if SOFTPLUS:
                    ddt = ddt * _row(dsp_t, rr, i)
                ddt = tl.where(m, ddt, 0.0)
                db_acc += ddt
                du_t = tl.where(rr[:, None] == i, du[None, :], du_t)
                ddl_t = tl.where(rr[:, None] == i, ddt[None, :], ddl_t)
            tl.store(du_ptr + r64[:, None] * s_du + offs_d[None, :], du_t, mask=m2)
            tl.store(ddl_ptr + r64[:, None] * s_ddl + offs_d[None, :], ddl_t, mask=m2)
            if HAS_Z:
                tl.store(dz_ptr + r64[:, None] * s_dz + offs_d[None, :], dz_t, mask=m2)
    tl.atomic_add(dA_ptr + hn_off, dA_acc, mask=mdn, sem="relaxed")
    if HAS_D:
        tl.atomic_add(dD_ptr + offs_d, dD_acc, mask=md, sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + offs_d, db_acc, mask=md, sem="relaxed")

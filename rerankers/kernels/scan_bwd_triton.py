"""Triton kernels of the varlen selective scan backward (main pass), two variants.

Both: one program per (segment, BD channels), chunks of BT steps in reverse; each chunk starts from
the state the forward stored at its start; the gradient w.r.t. the state at the segment's end comes
from later segments (``gin`` of :func:`.scan_triton._scan_bwd_local_kernel`, carried with the
segment decays ``exp(A * sum(delta))``). dB, dC are reduced over the program's channels and added
into (T, N) fp32 with atomics; dA, dD, d(delta_bias) are reduced over the segment and added into
fp32 buffers with atomics. ``d log a_t = dh_t * (h_t - b_t)`` needs no h_{t-1}.

``_scan_bwd_seq_kernel`` (default): recompute the chunk's BT states forward into a per-program fp32
scratch (BT, BD, N), then step backwards with the state gradient (BD, N) in registers (no scans).
``_scan_bwd_kernel``: per state n, a forward ``associative_scan`` over the chunk (recompute h) and
a reverse one for the state gradient (the shifted a_{t+1} is a second load of delta at t+1).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .scan_triton import _lin_combine, _segment, _sigmoid, _softplus


@triton.jit(do_not_specialize=["one"])
def _scan_bwd_kernel(dy_ptr, u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
                     states_ptr, dtsum_ptr, gin_ptr, seginfo_ptr, cu_ptr,
                     du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, scr_ptr,
                     stride_dy, stride_u, stride_dl, stride_B, stride_C, stride_z,
                     stride_du, stride_ddl, stride_dz,
                     n_seg, Dm, N, one,
                     HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SOFTPLUS: tl.constexpr, SEG: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
                     NP: tl.constexpr, MAXJ: tl.constexpr, TIME_IN_THREAD: tl.constexpr,
                     SCRATCH: tl.constexpr):
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    valid, k, cbase, seq_start, seg_start, seg_end, nseg = _segment(seginfo_ptr, n_seg, cu_ptr, pid, SEG)
    if valid:
        offs_d = pid_d * BD + tl.arange(0, BD)
        md = offs_d < Dm
        if TIME_IN_THREAD:
            # `one` == 1 at run time but unknown to the compiler: the (BT, BD) tiles then get one
            # channel per thread and all BT time steps in its registers (scans and time
            # reductions stay inside a thread) instead of 16-byte vectors along the channels.
            col = offs_d * one
        else:
            col = offs_d
        offs_n = tl.arange(0, NP)
        mn = offs_n < N
        mdn = md[:, None] & mn[None, :]
        dn_off = offs_d[:, None] * N + offs_n[None, :]
        A = tl.load(A_ptr + dn_off, mask=mdn, other=0.0).to(tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
        # gradient w.r.t. the state at the segment's last token, from later segments
        carry = tl.zeros([BD, NP], dtype=tl.float32)
        for jj in range(MAXJ):
            j = nseg - 1 - jj
            if j > k:
                slot = (seq_start + j * SEG) // SEG
                gin = tl.load(gin_ptr + slot * Dm * N + dn_off, mask=mdn, other=0.0)
                if j < nseg - 1:
                    dts = tl.load(dtsum_ptr + slot * Dm + offs_d, mask=md, other=0.0)
                    carry = gin + tl.exp(dts[:, None] * A) * carry
                else:
                    carry = gin
        dA_acc = tl.zeros([BD, NP], dtype=tl.float32)
        dD_acc = tl.zeros([BD], dtype=tl.float32)
        db_acc = tl.zeros([BD], dtype=tl.float32)
        rr = tl.arange(0, BT)
        ld = tl.arange(0, BD)
        if SCRATCH:
            # per-program scratch (3, BD, NP) fp32: two carry buffers (read one, write the other per
            # chunk) and the dA accumulator, so that the per-state loop touches (BD,) vectors in
            # whatever layout it computes them, with no (BD, NP) register tiles to update.
            scr = scr_ptr + (pid * tl.num_programs(1) + pid_d).to(tl.int64) * (3 * BD * NP)
            sc_off = ld[:, None] * NP + offs_n[None, :]
            tl.store(scr + sc_off, carry)  # both buffers: the first chunk run may be odd
            tl.store(scr + BD * NP + sc_off, carry)
            tl.store(scr + 2 * BD * NP + sc_off, dA_acc)
            tl.debug_barrier()
        for cc in range(SEG // BT):
            c = SEG // BT - 1 - cc
            t0 = seg_start + c * BT
            if t0 < seg_end:
                rows = t0 + rr
                m = rows < seg_end
                m_next = ((rows + 1) < seg_end) & (rr < BT - 1)
                r64 = rows.to(tl.int64)
                mt = m[:, None] & md[None, :]
                mtn = m_next[:, None] & md[None, :]
                dt = tl.load(dl_ptr + r64[:, None] * stride_dl + col[None, :], mask=mt, other=0.0).to(tl.float32)
                dtn = tl.load(dl_ptr + (r64[:, None] + 1) * stride_dl + col[None, :], mask=mtn,
                              other=0.0).to(tl.float32)
                if HAS_BIAS:
                    dt = dt + bias[None, :]
                    dtn = dtn + bias[None, :]
                if SOFTPLUS:
                    dt = _softplus(dt)
                    dtn = _softplus(dtn)
                dt = tl.where(mt, dt, 0.0)
                g = tl.load(dy_ptr + r64[:, None] * stride_dy + col[None, :], mask=mt, other=0.0).to(tl.float32)
                if HAS_Z:
                    zz = tl.load(z_ptr + r64[:, None] * stride_z + col[None, :], mask=mt, other=0.0).to(tl.float32)
                    g = g * zz * _sigmoid(zz)
                u = tl.load(u_ptr + r64[:, None] * stride_u + col[None, :], mask=mt, other=0.0).to(tl.float32)
                dtu = dt * u
                slot_c = (cbase + k * (SEG // BT) + c).to(tl.int64)
                st_ptr = states_ptr + slot_c * Dm * N + offs_d * N
                ypre = tl.zeros([BT, BD], dtype=tl.float32)
                ddt_a = tl.zeros([BT, BD], dtype=tl.float32)
                qB = tl.zeros([BT, BD], dtype=tl.float32)
                dB_t = tl.zeros([BT, NP], dtype=tl.float32)
                dC_t = tl.zeros([BT, NP], dtype=tl.float32)
                new_carry = tl.zeros([BD, NP], dtype=tl.float32)
                for n in tl.static_range(NP):
                    if n < N:
                        A_n = tl.load(A_ptr + offs_d * N + n, mask=md, other=0.0).to(tl.float32)
                        B_n = tl.load(B_ptr + r64 * stride_B + n, mask=m, other=0.0).to(tl.float32)
                        C_n = tl.load(C_ptr + r64 * stride_C + n, mask=m, other=0.0).to(tl.float32)
                        h0 = tl.load(st_ptr + n, mask=md, other=0.0)
                        a = tl.exp(dt * A_n[None, :])
                        b = dtu * B_n[:, None]
                        pa, hb = tl.associative_scan((a, b), 0, _lin_combine)
                        h = hb + pa * h0[None, :]
                        ypre += h * C_n[:, None]
                        dC_n = tl.sum(g * h, axis=1)
                        an = tl.where(mtn, tl.exp(dtn * A_n[None, :]), 1.0)
                        pq, qq = tl.associative_scan((an, g * C_n[:, None]), 0, _lin_combine, reverse=True)
                        sel = (offs_n == n)[None, :]
                        if SCRATCH:
                            c_n = tl.load(scr + (cc % 2) * (BD * NP) + ld * NP + n)
                        else:
                            c_n = tl.sum(tl.where(sel, carry, 0.0), axis=1)
                        q = tl.where(mt, qq + pq * c_n[None, :], 0.0)
                        dla = q * (h - b)
                        ddt_a += dla * A_n[None, :]
                        qB += q * B_n[:, None]
                        dA_n = tl.sum(dla * dt, axis=0)
                        dB_n = tl.sum(q * dtu, axis=1)
                        nc_n = tl.sum(tl.where((rr == 0)[:, None], a * q, 0.0), axis=0)
                        if SCRATCH:
                            tl.store(scr + ((cc + 1) % 2) * (BD * NP) + ld * NP + n, nc_n)
                            pa_ptr = scr + 2 * BD * NP + ld * NP + n
                            tl.store(pa_ptr, tl.load(pa_ptr) + dA_n)
                            tl.atomic_add(dB_ptr + r64 * N + n, dB_n, mask=m, sem="relaxed")
                            tl.atomic_add(dC_ptr + r64 * N + n, dC_n, mask=m, sem="relaxed")
                        else:
                            dA_acc += tl.where(sel, dA_n[:, None], 0.0)
                            new_carry += tl.where(sel, nc_n[:, None], 0.0)
                            dB_t += tl.where(sel, dB_n[:, None], 0.0)
                            dC_t += tl.where(sel, dC_n[:, None], 0.0)
                if SCRATCH:
                    tl.debug_barrier()
                else:
                    carry = new_carry
                ddt = ddt_a + qB * u
                du = qB * dt
                if HAS_D:
                    ypre += Dv[None, :] * u
                    du += g * Dv[None, :]
                    dD_acc += tl.sum(g * u, axis=0)
                tl.store(du_ptr + r64[:, None] * stride_du + col[None, :], du, mask=mt)
                if HAS_Z:
                    dy = tl.load(dy_ptr + r64[:, None] * stride_dy + col[None, :], mask=mt, other=0.0).to(tl.float32)
                    sz = _sigmoid(zz)
                    dz = dy * ypre * sz * (1.0 + zz * (1.0 - sz))
                    tl.store(dz_ptr + r64[:, None] * stride_dz + col[None, :], dz, mask=mt)
                if SOFTPLUS:
                    dl = tl.load(dl_ptr + r64[:, None] * stride_dl + col[None, :], mask=mt, other=0.0).to(tl.float32)
                    if HAS_BIAS:
                        dl = dl + bias[None, :]
                    ddt = ddt * _sigmoid(dl)
                ddl = tl.where(mt, ddt, 0.0)
                db_acc += tl.sum(ddl, axis=0)
                tl.store(ddl_ptr + r64[:, None] * stride_ddl + col[None, :], ddl, mask=mt)
                if not SCRATCH:
                    mtn2 = m[:, None] & mn[None, :]
                    tn_off = r64[:, None] * N + offs_n[None, :]
                    tl.atomic_add(dB_ptr + tn_off, dB_t, mask=mtn2, sem="relaxed")
                    tl.atomic_add(dC_ptr + tn_off, dC_t, mask=mtn2, sem="relaxed")
        if SCRATCH:
            tl.debug_barrier()
            dA_acc = tl.load(scr + 2 * BD * NP + sc_off)
        tl.atomic_add(dA_ptr + dn_off, dA_acc, mask=mdn, sem="relaxed")
        if HAS_D:
            tl.atomic_add(dD_ptr + offs_d, dD_acc, mask=md, sem="relaxed")
        if HAS_BIAS:
            tl.atomic_add(dbias_ptr + offs_d, db_acc, mask=md, sem="relaxed")


@triton.jit
def _scan_bwd_seq_kernel(dy_ptr, u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
                         states_ptr, dtsum_ptr, gin_ptr, seginfo_ptr, cu_ptr,
                         du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, hs_ptr,
                         stride_dy, stride_u, stride_dl, stride_B, stride_C, stride_z,
                         stride_du, stride_ddl, stride_dz,
                         n_seg, Dm, N,
                         HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                         SOFTPLUS: tl.constexpr, SEG: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
                         NP: tl.constexpr, MAXJ: tl.constexpr):
    """Sequential variant of the backward: per chunk, recompute the BT states forward into a
    per-program scratch (BT, BD, N) fp32, then walk the chunk backwards one step at a time with the
    state gradient (BD, N) in registers (no scans)."""
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    valid, k, cbase, seq_start, seg_start, seg_end, nseg = _segment(seginfo_ptr, n_seg, cu_ptr, pid, SEG)
    if valid:
        offs_d = pid_d * BD + tl.arange(0, BD)
        md = offs_d < Dm
        offs_n = tl.arange(0, NP)
        mn = offs_n < N
        mdn = md[:, None] & mn[None, :]
        dn_off = offs_d[:, None] * N + offs_n[None, :]
        A = tl.load(A_ptr + dn_off, mask=mdn, other=0.0).to(tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
        carry = tl.zeros([BD, NP], dtype=tl.float32)
        for jj in range(MAXJ):
            j = nseg - 1 - jj
            if j > k:
                slot = (seq_start + j * SEG) // SEG
                gin = tl.load(gin_ptr + slot * Dm * N + dn_off, mask=mdn, other=0.0)
                if j < nseg - 1:
                    dts = tl.load(dtsum_ptr + slot * Dm + offs_d, mask=md, other=0.0)
                    carry = gin + tl.exp(dts[:, None] * A) * carry
                else:
                    carry = gin
        hs = hs_ptr + (pid * tl.num_programs(1) + pid_d).to(tl.int64) * (BT * BD * NP)
        loc = tl.arange(0, BD)[:, None] * NP + offs_n[None, :]
        dA_acc = tl.zeros([BD, NP], dtype=tl.float32)
        dD_acc = tl.zeros([BD], dtype=tl.float32)
        db_acc = tl.zeros([BD], dtype=tl.float32)
        for cc in range(SEG // BT):
            c = SEG // BT - 1 - cc
            t0 = seg_start + c * BT
            if t0 < seg_end:
                slot_c = (cbase + k * (SEG // BT) + c).to(tl.int64)
                h = tl.load(states_ptr + slot_c * Dm * N + dn_off, mask=mdn, other=0.0)
                for i in tl.static_range(BT):
                    t = t0 + i
                    m = t < seg_end
                    t64 = t.to(tl.int64)
                    u = tl.load(u_ptr + t64 * stride_u + offs_d, mask=md & m, other=0.0).to(tl.float32)
                    dt = tl.load(dl_ptr + t64 * stride_dl + offs_d, mask=md & m, other=0.0).to(tl.float32)
                    Bt = tl.load(B_ptr + t64 * stride_B + offs_n, mask=mn & m, other=0.0).to(tl.float32)
                    if HAS_BIAS:
                        dt = dt + bias
                    if SOFTPLUS:
                        dt = _softplus(dt)
                    dt = tl.where(m, dt, 0.0)
                    h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
                    tl.store(hs + i * (BD * NP) + loc, h)
                tl.debug_barrier()
                for jr in tl.static_range(BT):
                    i = BT - 1 - jr
                    t = t0 + i
                    m = t < seg_end
                    t64 = t.to(tl.int64)
                    u = tl.load(u_ptr + t64 * stride_u + offs_d, mask=md & m, other=0.0).to(tl.float32)
                    dl = tl.load(dl_ptr + t64 * stride_dl + offs_d, mask=md & m, other=0.0).to(tl.float32)
                    dy = tl.load(dy_ptr + t64 * stride_dy + offs_d, mask=md & m, other=0.0).to(tl.float32)
                    Bt = tl.load(B_ptr + t64 * stride_B + offs_n, mask=mn & m, other=0.0).to(tl.float32)
                    Ct = tl.load(C_ptr + t64 * stride_C + offs_n, mask=mn & m, other=0.0).to(tl.float32)
                    if HAS_BIAS:
                        dl = dl + bias
                    if SOFTPLUS:
                        dt = _softplus(dl)
                    else:
                        dt = dl
                    dt = tl.where(m, dt, 0.0)
                    if HAS_Z:
                        zz = tl.load(z_ptr + t64 * stride_z + offs_d, mask=md & m, other=0.0).to(tl.float32)
                        sz = _sigmoid(zz)
                        g = dy * zz * sz
                    else:
                        g = dy
                    h = tl.load(hs + i * (BD * NP) + loc)
                    a = tl.exp(dt[:, None] * A)
                    dtu = dt * u
                    q = g[:, None] * Ct[None, :] + carry
                    dla = q * (h - dtu[:, None] * Bt[None, :])
                    dA_acc += dla * dt[:, None]
                    qBs = tl.sum(q * Bt[None, :], axis=1)
                    ddt = tl.sum(dla * A, axis=1) + qBs * u
                    du = qBs * dt
                    ypre = tl.sum(h * Ct[None, :], axis=1)
                    if HAS_D:
                        du += g * Dv
                        ypre += Dv * u
                        dD_acc += g * u
                    dB_row = tl.sum(q * dtu[:, None], axis=0)
                    dC_row = tl.sum(g[:, None] * h, axis=0)
                    tl.atomic_add(dB_ptr + t64 * N + offs_n, dB_row, mask=mn & m, sem="relaxed")
                    tl.atomic_add(dC_ptr + t64 * N + offs_n, dC_row, mask=mn & m, sem="relaxed")
                    carry = a * q
                    if HAS_Z:
                        dz = dy * ypre * sz * (1.0 + zz * (1.0 - sz))
                        tl.store(dz_ptr + t64 * stride_dz + offs_d, dz, mask=md & m)
                    if SOFTPLUS:
                        ddt = ddt * _sigmoid(dl)
                    ddt = tl.where(m, ddt, 0.0)
                    db_acc += ddt
                    tl.store(du_ptr + t64 * stride_du + offs_d, du, mask=md & m)
                    tl.store(ddl_ptr + t64 * stride_ddl + offs_d, ddt, mask=md & m)
                tl.debug_barrier()
        tl.atomic_add(dA_ptr + dn_off, dA_acc, mask=mdn, sem="relaxed")
        if HAS_D:
            tl.atomic_add(dD_ptr + offs_d, dD_acc, mask=md, sem="relaxed")
        if HAS_BIAS:
            tl.atomic_add(dbias_ptr + offs_d, db_acc, mask=md, sem="relaxed")

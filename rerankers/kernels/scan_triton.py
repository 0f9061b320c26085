"""Triton kernels of the varlen selective scan (Mamba-1), packed channel-last layout.

Work unit: one program per (segment, block of BD channels); see :mod:`.segments`.

Forward, two launches:
  1. ``_scan_fwd_kernel[LOCAL_ONLY=True]``: for every segment that is not the last of its
     sequence, its end state from a zero start and ``sum(delta)`` (the segment's decay is
     ``exp(A * sum(delta))``). Exits at once where every sequence fits one segment.
  2. ``_scan_fwd_kernel[LOCAL_ONLY=False]``: start state = carry over the earlier segments of the
     sequence, then a sequential walk over time with the (BD, N) fp32 state in registers
     (BT steps unrolled, so that the loads of a chunk are in flight together). Stores the state at
     every chunk start (fp32) for the backward.
Backward, two launches:
  1. ``_scan_bwd_local_kernel``: for every segment that is not the first, the gradient w.r.t. the
     state entering it from its own tokens: ``sum_t exp(A * cumsum(delta)_t) * g_t C_t``.
  2. the main backward, one of two variants in :mod:`.scan_bwd_triton` (sequential steps, the
     default, or chunked associative scans).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _softplus(x):
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _lin_combine(a1, b1, a2, b2):
    # h = a * h_prev + b; (a1, b1) first in scan order, (a2, b2) second
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _segment(seginfo_ptr, n_seg, cu_ptr, pid, SEG: tl.constexpr):
    s = tl.load(seginfo_ptr + pid)
    k = tl.load(seginfo_ptr + n_seg + pid)
    cbase = tl.load(seginfo_ptr + 2 * n_seg + pid)
    valid = s >= 0
    s = tl.maximum(s, 0)
    seq_start = tl.load(cu_ptr + s)
    seq_end = tl.load(cu_ptr + s + 1)
    seg_start = seq_start + k * SEG
    seg_end = tl.minimum(seq_end, seg_start + SEG)
    nseg = (seq_end - seq_start + SEG - 1) // SEG
    return valid, k, cbase, seq_start, seg_start, seg_end, nseg


@triton.jit
def _scan_fwd_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
                     states_ptr, send_ptr, dtsum_ptr, seginfo_ptr, cu_ptr,
                     stride_u, stride_dl, stride_B, stride_C, stride_z, stride_y,
                     n_seg, Dm, N,
                     HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SOFTPLUS: tl.constexpr, LOCAL_ONLY: tl.constexpr, SEG: tl.constexpr,
                     BT: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, MAXJ: tl.constexpr):
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    valid, k, cbase, seq_start, seg_start, seg_end, nseg = _segment(seginfo_ptr, n_seg, cu_ptr, pid, SEG)
    if LOCAL_ONLY:
        run = valid & (k < nseg - 1)
    else:
        run = valid
    if run:
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
        h = tl.zeros([BD, NP], dtype=tl.float32)
        dtacc = tl.zeros([BD], dtype=tl.float32)
        if not LOCAL_ONLY:
            # start state: carry over the earlier (full) segments of this sequence
            for jj in range(MAXJ):
                if jj < k:
                    slot = (seq_start + jj * SEG) // SEG
                    dts = tl.load(dtsum_ptr + slot * Dm + offs_d, mask=md, other=0.0)
                    se = tl.load(send_ptr + slot * Dm * N + dn_off, mask=mdn, other=0.0)
                    h = tl.exp(dts[:, None] * A) * h + se
        for c in range(SEG // BT):
            t0 = seg_start + c * BT
            if t0 < seg_end:
                if not LOCAL_ONLY:
                    slot_c = (cbase + k * (SEG // BT) + c).to(tl.int64)
                    tl.store(states_ptr + slot_c * Dm * N + dn_off, h, mask=mdn)
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
                    if LOCAL_ONLY:
                        dtacc += dt
                    h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
                    if not LOCAL_ONLY:
                        Ct = tl.load(C_ptr + t64 * stride_C + offs_n, mask=mn & m, other=0.0).to(tl.float32)
                        y = tl.sum(h * Ct[None, :], axis=1)
                        if HAS_D:
                            y += Dv * u
                        if HAS_Z:
                            zz = tl.load(z_ptr + t64 * stride_z + offs_d, mask=md & m, other=0.0).to(tl.float32)
                            y = y * zz * _sigmoid(zz)
                        tl.store(y_ptr + t64 * stride_y + offs_d, y, mask=md & m)
        if LOCAL_ONLY:
            slot = seg_start // SEG
            tl.store(send_ptr + slot * Dm * N + dn_off, h, mask=mdn)
            tl.store(dtsum_ptr + slot * Dm + offs_d, dtacc, mask=md)


@triton.jit
def _scan_bwd_local_kernel(dy_ptr, dl_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, gin_ptr, seginfo_ptr, cu_ptr,
                           stride_dy, stride_dl, stride_C, stride_z, n_seg, Dm, N,
                           HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                           SEG: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr):
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    valid, k, cbase, seq_start, seg_start, seg_end, nseg = _segment(seginfo_ptr, n_seg, cu_ptr, pid, SEG)
    if valid & (k > 0):
        offs_d = pid_d * BD + tl.arange(0, BD)
        md = offs_d < Dm
        offs_n = tl.arange(0, NP)
        mn = offs_n < N
        mdn = md[:, None] & mn[None, :]
        dn_off = offs_d[:, None] * N + offs_n[None, :]
        A = tl.load(A_ptr + dn_off, mask=mdn, other=0.0).to(tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
        G = tl.zeros([BD, NP], dtype=tl.float32)
        cum = tl.zeros([BD], dtype=tl.float32)
        for c in range(SEG // BT):
            t0 = seg_start + c * BT
            if t0 < seg_end:
                for i in tl.static_range(BT):
                    t = t0 + i
                    m = t < seg_end
                    t64 = t.to(tl.int64)
                    dt = tl.load(dl_ptr + t64 * stride_dl + offs_d, mask=md & m, other=0.0).to(tl.float32)
                    g = tl.load(dy_ptr + t64 * stride_dy + offs_d, mask=md & m, other=0.0).to(tl.float32)
                    Ct = tl.load(C_ptr + t64 * stride_C + offs_n, mask=mn & m, other=0.0).to(tl.float32)
                    if HAS_BIAS:
                        dt = dt + bias
                    if SOFTPLUS:
                        dt = _softplus(dt)
                    dt = tl.where(m, dt, 0.0)
                    if HAS_Z:
                        zz = tl.load(z_ptr + t64 * stride_z + offs_d, mask=md & m, other=0.0).to(tl.float32)
                        g = g * zz * _sigmoid(zz)
                    cum += dt
                    G += tl.exp(cum[:, None] * A) * g[:, None] * Ct[None, :]
        slot = seg_start // SEG
        tl.store(gin_ptr + slot * Dm * N + dn_off, G, mask=mdn)

"""The backward walk with each channel's states split over two lanes (``ScanConfig.bwd_split``).

Same work and formulas as :func:`.backward._scan_bwd_kernel` (read that first), other layout: thread ``v`` of a
program holds channel ``v // 2`` and the half ``v % 2`` of its states (``NH = NP / 2`` of them, as tuples of
one-value-per-thread vectors, so the layout is fixed by construction, not by the compiler's choice). A warp covers
16 channels instead of 32. What that buys: half the state-sized registers per thread (the history, carry, dA,
decays), so twice the resident warps per SM for the same channels; and dB / dC, summed over a warp's 16 channels,
take a 15-shuffle butterfly (:func:`_channel_sums`) instead of 31. What it costs: the per-channel work (delta's
softplus, du, d delta, dz) runs on both lanes of a channel, and the three sums over states (for du / d delta, and
dz's y) need one shuffle each with the partner lane (:func:`_pair_sum`). Stores of per-channel values come from
the even lane only. The local pass and the carries are the plain backward's (windows and buffers are shared).

Under the interpreter the lane exchange is a gather along the program's lanes (no inline PTX there), so the same
butterfly runs in the CPU tests.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..triton_utils import LOG2E, _lower_bound, _sigmoid, _softplus, _start_bits_down, interpreting
from .forward import A2_FLOOR, _reset_dt, _window_bounds

PTX: tl.constexpr = tl.constexpr(not interpreting())


@triton.jit
def _xor_lane(x, MASK: tl.constexpr):
    """(BV,) fp32: each thread gets ``x`` of lane ``lane ^ MASK`` of its warp (MASK < 32)."""
    if PTX:
        return tl.inline_asm_elementwise(f"shfl.sync.bfly.b32 $0, $1, {MASK}, 0x1f, -1;", "=r,r",
                                         [x.to(tl.uint32, bitcast=True)], dtype=tl.uint32, is_pure=True,
                                         pack=1).to(tl.float32, bitcast=True)
    else:
        return tl.gather(x, tl.arange(0, x.shape[0]) ^ MASK, 0)


@triton.jit
def _pair_sum(x):
    """x plus the partner lane's x: a sum over all states of a channel from the two halves' partial sums."""
    return x + _xor_lane(x, 1)


@triton.jit
def _channel_sums(vals, lane, V: tl.constexpr, ROUNDS: tl.constexpr, EXTRA: tl.constexpr):
    """Sums over the 16 channels of each warp (lane bits 1-4; bit 0 is the half) of ``V`` per-lane values (a tuple
    of (BV,) fp32, V a power of two). Halving rounds on lane bits 4, 3, ... (ROUNDS = min(log2 V, 4)): at each, a
    lane keeps the upper or the lower half of its values by its bit and adds the partner's copy of that half; then
    EXTRA = 4 - ROUNDS plain rounds on the bits left. Returns (the V >> ROUNDS sums this lane holds, ``off``): sum
    ``m`` is of the value that was at index ``off + m``, summed over the warp's channels of this lane's half. With
    EXTRA > 0 the lanes whose bits 1..EXTRA differ hold the same sums: one of them (bits zero) should emit."""
    off = lane * 0
    for r in tl.static_range(ROUNDS):
        b = ((lane >> (4 - r)) & 1) != 0
        new = ()
        for j in tl.static_range((V >> r) // 2):
            lo = vals[j]
            hi = vals[j + (V >> r) // 2]
            new = new + (tl.where(b, hi, lo) + _xor_lane(tl.where(b, lo, hi), 1 << (4 - r)),)
        off = off + tl.where(b, (V >> r) // 2, 0)
        vals = new
    for e in tl.static_range(EXTRA):
        new = ()
        for j in tl.static_range(V >> ROUNDS):
            new = new + (vals[j] + _xor_lane(vals[j], 1 << (4 - ROUNDS - e)),)
        vals = new
    return vals, off


@triton.jit
def _row_at(ptr, t, stride, offs_d, m):
    """(BV,) fp32: row ``t`` of a row-major (T, D) buffer at each lane's channel (0 where not ``m``)."""
    return tl.load(ptr + t.to(tl.int64) * stride + offs_d, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _dt_of(x, bias, valid, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta after bias and softplus; 0 on a row past the window (the state then stays as it is)."""
    if HAS_BIAS:
        x = x + bias
    if SOFTPLUS:
        x = _softplus(x)
    return tl.where(valid, x, 0.0)


@triton.jit
def _bc_half(ptr, t, T, stride, nb, NH: tl.constexpr, N, EVEN_N: tl.constexpr):
    """This lane's NH entries of row ``t`` of B or C ((T, N), row stride ``stride``) from state ``nb`` on, as a
    tuple of (BV,) fp32 (a row past the end reads row T - 1: see :func:`.forward._bc_row`)."""
    p = ptr + tl.minimum(t, T - 1).to(tl.int64) * stride + nb
    out = ()
    for k in tl.static_range(NH):
        if EVEN_N:
            out = out + (tl.load(p + k).to(tl.float32),)
        else:
            out = out + (tl.load(p + k, mask=nb + k < N, other=0.0).to(tl.float32),)
    return out


@triton.jit
def _step_states(h, dtr, dtu, Bt, A2, NH: tl.constexpr):
    """One token forward for this lane's states: h_k <- exp2(delta * A2_k) h_k + delta u B_k."""
    out = ()
    for k in tl.static_range(NH):
        out = out + (tl.exp2(dtr * A2[k]) * h[k] + dtu * Bt[k],)
    return out


@triton.jit(do_not_specialize=["s_dy", "s_u", "s_dl", "s_z", "s_du", "s_ddl", "s_dz", "s_h", "S", "WL"])
def _scan_bwd_split_kernel(dy_ptr, u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
                           states_ptr, gout_ptr, cu_ptr,
                           du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
                           s_dy, s_u, s_dl, s_B, s_C, s_z, s_du, s_ddl, s_dz, s_h,
                           T, Dm, N, S, WL,
                           HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                           SOFTPLUS: tl.constexpr, LOG_S: tl.constexpr, W: tl.constexpr, RUNTIME_WL: tl.constexpr,
                           BT: tl.constexpr, BH: tl.constexpr, BV: tl.constexpr, NH: tl.constexpr,
                           EVEN_N: tl.constexpr, ROUNDS: tl.constexpr, EXTRA: tl.constexpr):
    """The walk of :func:`.backward._scan_bwd_kernel` over window ``program_id(0)`` and channels
    ``program_id(1) * BV / 2 ..`` (BV threads, two per channel, NH states each: NP = 2 NH >= N)."""
    w, w0, w1 = _window_bounds(T, WL, W, RUNTIME_WL)
    lane = tl.arange(0, BV)
    half = lane & 1
    offs_d = tl.program_id(1) * (BV // 2) + (lane >> 1)
    md = offs_d < Dm
    lead = md & (half == 0)  # the lane that stores a channel's values
    nb = half * NH  # this lane's first state
    base = nb * s_h + offs_d  # its offset in (N, D) buffers (n-stride s_h); state k at base + k * s_h
    mk = ()
    A2 = ()
    carry = ()
    dA_acc = ()
    for k in tl.static_range(NH):
        m_k = md & (nb + k < N)
        mk = mk + (m_k,)
        A2 = A2 + (tl.minimum(tl.load(A_ptr + base + k * s_h, mask=m_k, other=0.0) * LOG2E, -A2_FLOOR,
                              propagate_nan=tl.PropagateNan.ALL),)
        carry = carry + (tl.load(gout_ptr + w.to(tl.int64) * Dm * N + base + k * s_h, mask=m_k, other=0.0),)
        dA_acc = dA_acc + (tl.zeros([BV], dtype=tl.float32),)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BV], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    dD_acc = tl.zeros([BV], dtype=tl.float32)
    db_acc = tl.zeros([BV], dtype=tl.float32)
    emit = ((lane >> 1) & ((1 << EXTRA) - 1)) == 0  # the lanes that add dB / dC (see _channel_sums)
    q = _lower_bound(cu_ptr, S, w1, LOG_S)
    for cc in range(W // BT):
        t0 = w0 + (W // BT - 1 - cc) * BT
        if t0 < w1:
            sm, q = _start_bits_down(cu_ptr, q, t0)
            h0 = ()
            for k in tl.static_range(NH):
                h0 = h0 + (tl.load(states_ptr + (t0 // BT).to(tl.int64) * Dm * N + base + k * s_h, mask=mk[k],
                                   other=0.0),)
            for j in tl.static_range(BT // BH - 1, -1, -1):
                h = h0
                for i in tl.static_range(j * BH):  # advance from the chunk's start to the sub-chunk
                    t = t0 + i
                    dt = _dt_of(_row_at(dl_ptr, t, s_dl, offs_d, md & (t < w1)), bias, t < w1, HAS_BIAS, SOFTPLUS)
                    u = _row_at(u_ptr, t, s_u, offs_d, md & (t < w1))
                    h = _step_states(h, _reset_dt(dt, sm, i), dt * u, _bc_half(B_ptr, t, T, s_B, nb, NH, N, EVEN_N),
                                     A2, NH)
                ts = t0 + j * BH
                us = ()
                dls = ()
                dys = ()
                zs = ()
                for i in tl.static_range(BH):
                    mt = md & (ts + i < w1)
                    us = us + (_row_at(u_ptr, ts + i, s_u, offs_d, mt),)
                    dls = dls + (_row_at(dl_ptr, ts + i, s_dl, offs_d, mt),)
                    dys = dys + (_row_at(dy_ptr, ts + i, s_dy, offs_d, mt),)
                    if HAS_Z:
                        zs = zs + (_row_at(z_ptr, ts + i, s_z, offs_d, mt),)
                # recompute the sub-chunk's states, keeping them (hs[i * NH + k])
                hs = ()
                for i in tl.static_range(BH):
                    dt = _dt_of(dls[i], bias, ts + i < w1, HAS_BIAS, SOFTPLUS)
                    h = _step_states(h, _reset_dt(dt, sm, j * BH + i), dt * us[i],
                                     _bc_half(B_ptr, ts + i, T, s_B, nb, NH, N, EVEN_N), A2, NH)
                    hs = hs + h
                for i in tl.static_range(BH - 1, -1, -1):
                    valid = ts + i < w1
                    t64 = (ts + i).to(tl.int64)
                    Bt = _bc_half(B_ptr, ts + i, T, s_B, nb, NH, N, EVEN_N)
                    Ct = _bc_half(C_ptr, ts + i, T, s_C, nb, NH, N, EVEN_N)
                    dt = _dt_of(dls[i], bias, valid, HAS_BIAS, SOFTPLUS)
                    dtr = _reset_dt(dt, sm, j * BH + i)
                    u = us[i]
                    dy = dys[i]
                    if HAS_Z:
                        zz = zs[i]
                        sz = _sigmoid(zz)
                        g = dy * zz * sz
                    else:
                        g = dy
                    dtu = dt * u
                    qB = tl.zeros([BV], dtype=tl.float32)
                    dsum = tl.zeros([BV], dtype=tl.float32)
                    ypre = tl.zeros([BV], dtype=tl.float32)
                    xs = ()
                    ys = ()
                    new_carry = ()
                    new_dA = ()
                    for k in tl.static_range(NH):
                        hk = hs[i * NH + k]
                        qs = g * Ct[k] + carry[k]
                        dla = qs * (hk - dtu * Bt[k])
                        new_dA = new_dA + (dA_acc[k] + dla * dt,)
                        qB += qs * Bt[k]
                        dsum += dla * A2[k]
                        if HAS_Z:
                            ypre += hk * Ct[k]
                        xs = xs + (qs * dtu,)
                        ys = ys + (hk * g,)
                        new_carry = new_carry + (tl.exp2(dtr * A2[k]) * qs,)  # 0 across a sequence start
                    carry = new_carry
                    dA_acc = new_dA
                    qB = _pair_sum(qB)
                    ddt = _pair_sum(dsum) * (1.0 / LOG2E) + qB * u
                    du = qB * dt
                    if HAS_D:
                        du += g * Dv
                        dD_acc += g * u
                    sums, off = _channel_sums(xs + ys, lane, 2 * NH, ROUNDS, EXTRA)
                    for mm in tl.static_range((2 * NH) >> ROUNDS):
                        idx = off + mm  # 0..NH-1: dB of state nb + idx; NH..2NH-1: dC of state nb + idx - NH
                        n_l = nb + idx % NH
                        tl.atomic_add(tl.where(idx < NH, dB_ptr, dC_ptr) + t64 * N + n_l, sums[mm],
                                      mask=emit & (n_l < N) & valid, sem="relaxed")
                    if HAS_Z:
                        ypre = _pair_sum(ypre)
                        if HAS_D:
                            ypre += Dv * u
                        tl.store(dz_ptr + t64 * s_dz + offs_d, dy * ypre * sz * (1.0 + zz * (1.0 - sz)),
                                 mask=lead & valid)
                    if SOFTPLUS:
                        x = dls[i]
                        if HAS_BIAS:
                            x = x + bias
                        ddt = ddt * _sigmoid(x)
                    ddt = tl.where(valid, ddt, 0.0)
                    db_acc += ddt
                    tl.store(du_ptr + t64 * s_du + offs_d, du, mask=lead & valid)
                    tl.store(ddl_ptr + t64 * s_ddl + offs_d, ddt, mask=lead & valid)
    for k in tl.static_range(NH):
        tl.atomic_add(dA_ptr + base + k * s_h, dA_acc[k], mask=mk[k], sem="relaxed")
    if HAS_D:
        tl.atomic_add(dD_ptr + offs_d, dD_acc, mask=lead, sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + offs_d, db_acc, mask=lead, sem="relaxed")

"""Triton kernels of the varlen SSD scan (Mamba-2), backward (imports triton). The forward
(:mod:`.forward`) keeps, besides its inputs, ``seq``, ``dtd`` and ``cs`` ((T, H) fp32), ``start``
(the state entering every chunk, (chunks, H, P, N) fp32) and ``ld`` (the chunks' passing log-decays).
Three launches, the forward's in reverse:

1. ``_ssd_dstart_kernel``, grid (chunks, heads): the gradient of the state entering each chunk from
   the off-diagonal term, ``dstart[c] = (exp(cs)·[from the previous chunk's sequence]·dy)^T · C``.
2. ``_ssd_state_passing_bwd_kernel``, grid (heads, blocks of P·N): the passing in reverse,
   ``dstate[c] = g; dld[c] = exp(ld[c])·<g, start[c]>; g = dstart[c] + exp(ld[c])·g`` from the last
   chunk down (``g`` the gradient of the state after chunk c; per-block partials of ``dld``, summed
   by the launcher; in place: the launcher passes the same buffer as ``dstart`` and ``dstate``).
3. ``_ssd_chunk_bwd_kernel``, grid (chunks, heads): everything else of a chunk, from its (Q, Q)
   blocks recomputed: dx (intra-chunk ``M^T·dy``, chunk state ``w·(B·dstate^T)``, ``D·dy``), dB and dC
   per head ((T, H, N) fp32, summed over each group's heads afterwards), the gradient of ``cs`` from
   the decays, then of the log-decays ``a = dt·A`` through the per-sequence masked cumulative sum, of
   dt (through softplus and the clamp), and per-chunk partials of dA, dD and d dt_bias.

Every term keeps the forward's sequence masks, so a loss on one sequence gives exactly zero gradient
to the others (masked entries are exact zeros, resets multiply by exp(-inf) = 0).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .forward import _discretize, _dot, _last_of


@triton.jit
def _ssd_dstart_kernel(dy_ptr, C_ptr, seq_ptr, cs_ptr, dstart_ptr, T, H, P, N, R, s_dyt, s_dyh, s_ct, s_cg,
                       Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, LOWP: tl.constexpr,
                       LP_FP16: tl.constexpr):
    c = tl.program_id(0)
    h = tl.program_id(1)
    g = h // R
    rr = tl.arange(0, Q)
    t0 = c * Q
    rows = t0 + rr
    valid = rows < T
    rows64 = rows.to(tl.int64)
    sq = tl.load(seq_ptr + rows64, mask=valid, other=-1)
    cs = tl.load(cs_ptr + rows64 * H + h, mask=valid, other=0.0)
    prev_seq = tl.load(seq_ptr + tl.maximum(t0 - 1, 0).to(tl.int64))
    from_prev = valid & (sq == prev_seq) & (c > 0)
    carry = tl.exp(tl.where(from_prev, cs, float("-inf")))
    offs_p = tl.arange(0, BP)
    offs_n = tl.arange(0, BN)
    mp = (offs_p < P)[None, :]
    mn = (offs_n < N)[None, :]
    dy = tl.load(dy_ptr + rows64[:, None] * s_dyt + h * s_dyh + offs_p[None, :], mask=valid[:, None] & mp, other=0.0)
    ct = tl.load(C_ptr + rows64[:, None] * s_ct + g * s_cg + offs_n[None, :], mask=valid[:, None] & mn, other=0.0)
    ds = _dot(tl.trans(dy.to(tl.float32) * carry[:, None]), ct, LOWP, LP_FP16)           # (BP, BN)
    base = (c * H + h).to(tl.int64) * P * N
    tl.store(dstart_ptr + base + offs_p[:, None] * N + offs_n[None, :], ds, mask=(offs_p < P)[:, None] & mn)


@triton.jit
def _ssd_state_passing_bwd_kernel(dstart_ptr, start_ptr, ld_ptr, dstate_ptr, dld_ptr, K, H, PN,
                                  BLOCK: tl.constexpr):
    h = tl.program_id(0)
    blk = tl.program_id(1)
    nblk = tl.num_programs(1)
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    m = offs < PN
    g = tl.zeros([BLOCK], dtype=tl.float32)
    c = K - 1
    while c >= 0:
        base = (c * H + h).to(tl.int64) * PN
        ds = tl.load(dstart_ptr + base + offs, mask=m, other=0.0)   # read before the store: dstate may be dstart
        tl.store(dstate_ptr + base + offs, g, mask=m)
        e = tl.exp(tl.load(ld_ptr + c * H + h))
        st = tl.load(start_ptr + base + offs, mask=m, other=0.0)
        tl.store(dld_ptr + (c * H + h) * nblk + blk, e * tl.sum(g * st, axis=0))
        g = ds + e * g
        c -= 1


@triton.jit
def _ssd_chunk_bwd_kernel(x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dy_ptr, seq_ptr, dtd_ptr, cs_ptr,
                          start_ptr, dstate_ptr, dld_ptr, dx_ptr, ddt_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
                          T, H, P, N, R, s_xt, s_xh, s_dtt, s_dth, s_bt, s_bg, s_ct, s_cg, s_dyt, s_dyh,
                          lim_lo, lim_hi, Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
                          HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr,
                          HAS_D: tl.constexpr, LOWP: tl.constexpr, LP_FP16: tl.constexpr):
    c = tl.program_id(0)
    h = tl.program_id(1)
    g = h // R
    rr = tl.arange(0, Q)
    t0 = c * Q
    rows = t0 + rr
    valid = rows < T
    rows64 = rows.to(tl.int64)
    sq = tl.load(seq_ptr + rows64, mask=valid, other=-1)
    d = tl.load(dtd_ptr + rows64 * H + h, mask=valid, other=0.0)
    cs = tl.load(cs_ptr + rows64 * H + h, mask=valid, other=0.0)
    A = tl.load(A_ptr + h).to(tl.float32)

    offs_p = tl.arange(0, BP)
    offs_n = tl.arange(0, BN)
    mp = (offs_p < P)[None, :]
    mn = (offs_n < N)[None, :]
    mpn = (offs_p < P)[:, None] & mn
    xt = tl.load(x_ptr + rows64[:, None] * s_xt + h * s_xh + offs_p[None, :], mask=valid[:, None] & mp, other=0.0)
    dy = tl.load(dy_ptr + rows64[:, None] * s_dyt + h * s_dyh + offs_p[None, :], mask=valid[:, None] & mp, other=0.0)
    ct = tl.load(C_ptr + rows64[:, None] * s_ct + g * s_cg + offs_n[None, :], mask=valid[:, None] & mn, other=0.0)
    bt = tl.load(B_ptr + rows64[:, None] * s_bt + g * s_bg + offs_n[None, :], mask=valid[:, None] & mn, other=0.0)
    base = (c * H + h).to(tl.int64) * P * N
    st = tl.load(start_ptr + base + offs_p[:, None] * N + offs_n[None, :], mask=mpn, other=0.0)     # (BP, BN)
    dst = tl.load(dstate_ptr + base + offs_p[:, None] * N + offs_n[None, :], mask=mpn, other=0.0)   # (BP, BN)
    xf = xt.to(tl.float32)
    dyf = dy.to(tl.float32)

    # 1. intra-chunk: y = M·x, M = (C·B^T) ∘ L ∘ dt_s
    cb = _dot(ct, tl.trans(bt), LOWP, LP_FP16)                                         # (Q, Q)
    same = (sq[:, None] == sq[None, :]) & (rr[:, None] >= rr[None, :]) & valid[:, None] & valid[None, :]
    decay = tl.exp(tl.where(same, cs[:, None] - cs[None, :], float("-inf")))
    cbl = cb * decay
    m = cbl * d[None, :]
    dm = _dot(dy, tl.trans(xt), LOWP, LP_FP16)                                         # (Q, Q)
    dx = _dot(tl.trans(m), dy, LOWP, LP_FP16)                                          # (Q, BP)
    z = dm * m
    dcs = tl.sum(z, axis=1) - tl.sum(z, axis=0)
    ddt = tl.sum(dm * cbl, axis=0)
    dcb = dm * decay * d[None, :]
    dC = _dot(dcb, bt, LOWP, LP_FP16)                                                  # (Q, BN)
    dB = _dot(tl.trans(dcb), ct, LOWP, LP_FP16)                                        # (Q, BN)

    # 2. off-diagonal: y += carry_l · C_l·start^T
    prev_seq = tl.load(seq_ptr + tl.maximum(t0 - 1, 0).to(tl.int64))
    from_prev = valid & (sq == prev_seq) & (c > 0)
    carry = tl.exp(tl.where(from_prev, cs, float("-inf")))
    cst = _dot(ct, tl.trans(st), LOWP, LP_FP16)                                         # (Q, BP)
    dC += carry[:, None] * _dot(dy, st, LOWP, LP_FP16)
    dcs += carry * tl.sum(dyf * cst, axis=1)

    # 3. the chunk's end state: state = sum_s w_s x_s^T B_s, w_s = exp(cs_end - cs_s) dt_s on its last sequence
    last = tl.minimum(Q - 1, T - 1 - t0)
    end_seq = _last_of(sq, rr, last)
    cs_end = _last_of(cs, rr, last)
    in_end = valid & (sq == end_seq)
    e = tl.exp(tl.where(in_end, cs_end - cs, float("-inf")))
    w = e * d
    bd = _dot(bt, tl.trans(dst), LOWP, LP_FP16)                                         # (Q, BP)
    dx += w[:, None] * bd
    dB += w[:, None] * _dot(xt, dst, LOWP, LP_FP16)
    dw = tl.sum(xf * bd, axis=1)
    ddt += dw * e
    dcs -= dw * w
    dcs_end = tl.sum(dw * w, axis=0)
    # the passing log-decay ld = cs_end where the chunk's last sequence runs in (dld is 0 where it does not)
    dcs += tl.where(rr == last, dcs_end + tl.load(dld_ptr + c * H + h), 0.0)

    # 4. cs = masked cumulative sum of a = dt·A over the own sequence: da_s = sum_{l >= s, same} dcs_l
    da = tl.sum(tl.where(same, dcs[:, None], 0.0), axis=0)
    ddt += da * A
    tl.store(dA_ptr + c * H + h, tl.sum(da * d, axis=0))

    # 5. D skip, then dt through the clamp and softplus
    if HAS_D:
        dx += tl.load(D_ptr + h).to(tl.float32) * dyf
        tl.store(dD_ptr + c * H + h, tl.sum(tl.sum(dyf * xf, axis=1), axis=0))
    _, deriv = _discretize(dt_ptr, bias_ptr, rows64, valid, h, s_dtt, s_dth, lim_lo, lim_hi, HAS_BIAS, SOFTPLUS,
                           HAS_LIMIT)
    draw = tl.where(valid, ddt * deriv, 0.0)
    if HAS_BIAS:
        tl.store(dbias_ptr + c * H + h, tl.sum(draw, axis=0))

    tl.store(dx_ptr + rows64[:, None] * (H * P) + h * P + offs_p[None, :], dx.to(dx_ptr.dtype.element_ty),
             mask=valid[:, None] & mp)
    tl.store(ddt_ptr + rows64 * H + h, draw.to(ddt_ptr.dtype.element_ty), mask=valid)
    tl.store(dB_ptr + rows64[:, None] * (H * N) + h * N + offs_n[None, :], dB, mask=valid[:, None] & mn)
    tl.store(dC_ptr + rows64[:, None] * (H * N) + h * N + offs_n[None, :], dC, mask=valid[:, None] & mn)

"""Triton kernels of the varlen SSD scan (Mamba-2), forward, over the packed stream (imports triton).

Same chunking and masking as :mod:`.chunked` (its oracle): the packed stream is cut into chunks of
``Q`` tokens regardless of where sequences start, and every term is masked by the sequence id of each token
(``seq``, int32 per token; rows past ``T`` are masked as if of no sequence). Three launches:

1. ``_ssd_chunk_state_kernel``, grid (chunks, heads): the discretized ``dt`` (bias, softplus, clamp)
   and ``cs``, the cumulative log-decay ``dt·A`` of each token's own sequence inside the chunk (a
   masked (Q, Q) row sum, as chunked.py's masked matmul), both stored (T, H) fp32 for launch 3; the
   state after the chunk from its own tokens of the sequence it ends in, ``B^T·(exp(cs_end - cs)·dt·x)``
   as one (P, Q)·(Q, N) dot, stored (chunks, H, P, N) fp32; and the chunk's log-decay for the
   passing, ``cs_end`` where the chunk's last sequence runs in from the previous chunk, else -inf
   (a reset: the carried state is multiplied by exp(-inf) = 0).
2. ``_ssd_state_passing_kernel``, grid (heads, blocks of P·N): the sequential pass over chunks,
   ``start[c] = carry; carry = exp(ld[c])·carry + state[c]``: the state entering every chunk (in place:
   the launcher passes the same buffer as ``state`` and ``start``).
3. ``_ssd_chunk_scan_kernel``, grid (chunks, heads): the intra-chunk product
   ``((C·B^T) ∘ exp(cs_l - cs_s)·[same sequence, s <= l]·dt_s) · x`` ((Q, N)·(N, Q) then (Q, Q)·(Q, P)),
   plus ``exp(cs_l)·C_l·start[c]`` for the tokens of the sequence the previous chunk ended in
   (the only one that runs across the boundary), plus ``D·x``; y stored in x's dtype.

Precision: fp32 everywhere outside the dots; the dots take fp32 operands in IEEE fp32 (no TF32)
for fp32 inputs, and 16-bit operands (fp32 accumulation) for bf16/fp16 inputs, as mamba_ssm's
kernels do (``LOWP``). Tiles hold the full head dim P and state dim N (padded to powers of two).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..triton_utils import _sigmoid, _softplus, interpreting

EMULATE_LOWP: tl.constexpr = tl.constexpr(interpreting())


@triton.jit
def _dot(a, b, LOWP: tl.constexpr, LP_FP16: tl.constexpr):
    """a·b with fp32 accumulation: 16-bit operands (fp16 if LP_FP16, else bf16) if LOWP, else IEEE fp32.
    Under the interpreter (EMULATE_LOWP) a 16-bit tl.dot returns garbage (Triton 3.6: it multiplies the
    bit patterns), so there the operands are rounded to 16 bits and multiplied in fp32: the same result
    (products of 16-bit values are exact in fp32), up to the order of the fp32 accumulation."""
    if LOWP:
        lp = tl.float16 if LP_FP16 else tl.bfloat16
        if EMULATE_LOWP:
            return tl.dot(a.to(lp).to(tl.float32), b.to(lp).to(tl.float32), input_precision="ieee")
        return tl.dot(a.to(lp), b.to(lp))
    return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")


@triton.jit
def _last_of(v, rr, last):
    """v[last] of a (Q,) vector (``last`` a scalar index)."""
    return tl.sum(tl.where(rr == last, v, tl.zeros_like(v)), axis=0)


@triton.jit
def _discretize(dt_ptr, bias_ptr, rows64, valid, h, s_dtt, s_dth, lim_lo, lim_hi, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr):
    """(Q,) discretized dt of head h (0 on invalid rows) and its derivative with respect to the raw dt
    (sigmoid of the softplus argument; 0 where the clamp is active, as torch.clamp's gradient)."""
    d = tl.load(dt_ptr + rows64 * s_dtt + h * s_dth, mask=valid, other=0.0).to(tl.float32)
    if HAS_BIAS:
        d = d + tl.load(bias_ptr + h).to(tl.float32)
    deriv = d * 0.0 + 1.0
    if SOFTPLUS:
        deriv = tl.where(d > 20.0, 1.0, _sigmoid(d))
        d = _softplus(d)
    if HAS_LIMIT:
        deriv = tl.where((d >= lim_lo) & (d <= lim_hi), deriv, 0.0)
        d = tl.minimum(tl.maximum(d, lim_lo), lim_hi)
    return tl.where(valid, d, 0.0), tl.where(valid, deriv, 0.0)


@triton.jit
def _ssd_chunk_state_kernel(x_ptr, dt_ptr, A_ptr, B_ptr, bias_ptr, seq_ptr, dtd_ptr, cs_ptr, state_ptr, ld_ptr,
                            T, H, P, N, R, s_xt, s_xh, s_dtt, s_dth, s_bt, s_bg, lim_lo, lim_hi,
                            Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, HAS_BIAS: tl.constexpr,
                            SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr, LOWP: tl.constexpr,
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

    d, _ = _discretize(dt_ptr, bias_ptr, rows64, valid, h, s_dtt, s_dth, lim_lo, lim_hi, HAS_BIAS, SOFTPLUS,
                       HAS_LIMIT)
    a = d * tl.load(A_ptr + h).to(tl.float32)

    # cs[l] = sum of a[s] over s <= l of l's own sequence (no other sequence's dt enters it)
    same = (sq[:, None] == sq[None, :]) & (rr[:, None] >= rr[None, :])
    cs = tl.sum(tl.where(same, a[None, :], 0.0), axis=1)
    tl.store(dtd_ptr + rows64 * H + h, d, mask=valid)
    tl.store(cs_ptr + rows64 * H + h, cs, mask=valid)

    last = tl.minimum(Q - 1, T - 1 - t0)
    end_seq = _last_of(sq, rr, last)
    cs_end = _last_of(cs, rr, last)
    in_end = valid & (sq == end_seq)
    w = tl.where(in_end, tl.exp(tl.where(in_end, cs_end - cs, 0.0)) * d, 0.0)

    offs_p = tl.arange(0, BP)
    offs_n = tl.arange(0, BN)
    xt = tl.load(x_ptr + rows64[:, None] * s_xt + h * s_xh + offs_p[None, :],
                 mask=valid[:, None] & (offs_p < P)[None, :], other=0.0)
    bt = tl.load(B_ptr + rows64[:, None] * s_bt + g * s_bg + offs_n[None, :],
                 mask=valid[:, None] & (offs_n < N)[None, :], other=0.0)
    xw = xt.to(tl.float32) * w[:, None]
    state = _dot(tl.trans(xw), bt, LOWP, LP_FP16)                                      # (BP, BN)
    base = (c * H + h).to(tl.int64) * P * N
    tl.store(state_ptr + base + offs_p[:, None] * N + offs_n[None, :], state,
             mask=(offs_p < P)[:, None] & (offs_n < N)[None, :])

    # the chunk passes the carried state on only if its last sequence runs in from the previous chunk
    prev_seq = tl.load(seq_ptr + tl.maximum(t0 - 1, 0).to(tl.int64))
    runs_in = (c > 0) & (prev_seq == end_seq)
    tl.store(ld_ptr + c * H + h, tl.where(runs_in, cs_end, float("-inf")))


@triton.jit
def _ssd_state_passing_kernel(state_ptr, ld_ptr, start_ptr, K, H, PN, BLOCK: tl.constexpr):
    h = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < PN
    carry = tl.zeros([BLOCK], dtype=tl.float32)
    c = K * 0
    while c < K:
        base = (c * H + h).to(tl.int64) * PN
        s = tl.load(state_ptr + base + offs, mask=m, other=0.0)    # read before the store: start may be state
        tl.store(start_ptr + base + offs, carry, mask=m)
        carry = tl.exp(tl.load(ld_ptr + c * H + h)) * carry + s
        c += 1


@triton.jit
def _ssd_chunk_scan_kernel(x_ptr, B_ptr, C_ptr, D_ptr, seq_ptr, dtd_ptr, cs_ptr, start_ptr, y_ptr,
                           T, H, P, N, R, s_xt, s_xh, s_bt, s_bg, s_ct, s_cg,
                           Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, HAS_D: tl.constexpr,
                           LOWP: tl.constexpr, LP_FP16: tl.constexpr):
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

    offs_p = tl.arange(0, BP)
    offs_n = tl.arange(0, BN)
    mp = (offs_p < P)[None, :]
    mn = (offs_n < N)[None, :]
    ct = tl.load(C_ptr + rows64[:, None] * s_ct + g * s_cg + offs_n[None, :], mask=valid[:, None] & mn, other=0.0)
    bt = tl.load(B_ptr + rows64[:, None] * s_bt + g * s_bg + offs_n[None, :], mask=valid[:, None] & mn, other=0.0)
    xt = tl.load(x_ptr + rows64[:, None] * s_xt + h * s_xh + offs_p[None, :], mask=valid[:, None] & mp, other=0.0)

    # 1. intra-chunk: (C·B^T ∘ decay ∘ dt_s) · x over s <= l of l's sequence
    cb = _dot(ct, tl.trans(bt), LOWP, LP_FP16)                                       # (Q, Q)
    same = (sq[:, None] == sq[None, :]) & (rr[:, None] >= rr[None, :]) & valid[:, None] & valid[None, :]
    decay = tl.exp(tl.where(same, cs[:, None] - cs[None, :], float("-inf")))
    m = cb * decay * d[None, :]
    y = _dot(m, xt, LOWP, LP_FP16)                                                    # (Q, BP)

    # 2. off-diagonal: the tokens of the sequence the previous chunk ended in read the entering state
    prev_seq = tl.load(seq_ptr + tl.maximum(t0 - 1, 0).to(tl.int64))
    from_prev = valid & (sq == prev_seq) & (c > 0)
    carry = tl.exp(tl.where(from_prev, cs, float("-inf")))                             # (Q,)
    base = (c * H + h).to(tl.int64) * P * N
    st = tl.load(start_ptr + base + offs_p[:, None] * N + offs_n[None, :],
                 mask=(offs_p < P)[:, None] & mn, other=0.0)                           # (BP, BN)
    y += carry[:, None] * _dot(ct, tl.trans(st), LOWP, LP_FP16)

    if HAS_D:
        y += tl.load(D_ptr + h).to(tl.float32) * xt.to(tl.float32)
    tl.store(y_ptr + rows64[:, None] * (H * P) + h * P + offs_p[None, :], y.to(y_ptr.dtype.element_ty),
             mask=valid[:, None] & mp)

"""Triton kernel of the fused residual add + RMSNorm, forward (and the load helper of both kernels).

One program per block of BR rows; a row's H channels sit in one block of BH = next_pow2(H) columns
(H up to a few thousand: mamba-2.8b's 2560 is a (BR, 4096) tile), so the mean square is one
in-register reduction per row and every input element is read once. Per row::

    x       = hidden (+ residual, rounded to the sum's dtype where that is bf16/fp16)       fp32
    rstd    = 1 / sqrt(mean(x^2) + eps)                                                   stored (T,) fp32
    out     = (x * rstd) * w                                                              out's dtype
    res_out = x                                                         stored where asked, its dtype

Row strides are left to Triton's specialisation (multiples of 16 give vector loads).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _round_bf16(x):
    """fp32 x rounded to the nearest bf16 (ties to even), as fp32: torch's rounding of a bf16 sum. Done
    on the bits, so that the interpreter (whose fp32 -> bf16 cast truncates) rounds as the GPU does."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))


@triton.jit
def _load_x(h_ptr, r_ptr, rows, cols, m, stride_h, stride_r, HAS_R: tl.constexpr, ROUND: tl.constexpr):
    """(BR, BH) fp32 tile of hidden (+ residual): the sum rounded to bf16 (ROUND 1) or fp16 (ROUND 2)
    as torch rounds a sum of two bf16/fp16 tensors, or kept in fp32 (ROUND 0); zero where masked."""
    x = tl.load(h_ptr + rows[:, None] * stride_h + cols[None, :], mask=m, other=0.0).to(tl.float32)
    if HAS_R:
        x = x + tl.load(r_ptr + rows[:, None] * stride_r + cols[None, :], mask=m, other=0.0).to(tl.float32)
        if ROUND == 1:
            x = _round_bf16(x)
        if ROUND == 2:
            x = x.to(tl.float16).to(tl.float32)
    return x


@triton.jit
def _add_rmsnorm_fwd_kernel(h_ptr, r_ptr, w_ptr, out_ptr, res_ptr, rstd_ptr, T, H, stride_h, stride_r, stride_o,
                            stride_s, eps, HAS_R: tl.constexpr, STORE_RES: tl.constexpr, ROUND: tl.constexpr,
                            BR: tl.constexpr, BH: tl.constexpr):
    """Rows [pid * BR, pid * BR + BR): out = x * rstd * w, rstd, and res_out = x where STORE_RES."""
    rows = (tl.program_id(0) * BR + tl.arange(0, BR)).to(tl.int64)
    cols = tl.arange(0, BH)
    mr = rows < T
    mc = cols < H
    m = mr[:, None] & mc[None, :]
    x = _load_x(h_ptr, r_ptr, rows, cols, m, stride_h, stride_r, HAS_R, ROUND)
    if STORE_RES:
        tl.store(res_ptr + rows[:, None] * stride_s + cols[None, :], x.to(res_ptr.dtype.element_ty), mask=m)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / H + eps)
    tl.store(rstd_ptr + rows, rstd, mask=mr)
    w = tl.load(w_ptr + cols, mask=mc, other=0.0).to(tl.float32)
    y = (x * rstd[:, None]) * w[None, :]
    tl.store(out_ptr + rows[:, None] * stride_o + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=m)

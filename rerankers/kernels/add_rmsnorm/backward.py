"""Triton kernel of the fused residual add + RMSNorm, backward.

With xhat = x * rstd and wg = dout * w (fp32), per row::

    dx = rstd * (wg - xhat * mean(wg * xhat)) (+ d residual_out, which flows straight into x)
    dw = sum over rows of dout * xhat

dx is the gradient of hidden and of residual alike (x = hidden + residual): it is stored once, in
hidden's dtype, and a second time in residual's dtype only where that differs (DX2). x is read from
the stored residual_out, or recomputed from hidden + residual (HAS_R) where residual_out was not
kept (the backbone's final norm); rstd comes from the forward. Each program walks TILES blocks of BR
rows and writes its partial dw (BH,) to its own row of a (programs, H) fp32 buffer, which the host
sums in a fixed order: no atomics, deterministic.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .forward import _load_x


@triton.jit
def _add_rmsnorm_bwd_kernel(dout_ptr, dres_ptr, x_ptr, r_ptr, w_ptr, rstd_ptr, dx_ptr, dx2_ptr, dw_ptr, T, H,
                            stride_do, stride_dr, stride_x, stride_r, stride_dx, stride_dx2,
                            HAS_DRES: tl.constexpr, HAS_R: tl.constexpr, ROUND: tl.constexpr, DX2: tl.constexpr,
                            BR: tl.constexpr, BH: tl.constexpr, TILES: tl.constexpr):
    """Rows [pid * TILES * BR, (pid + 1) * TILES * BR): dx (and its copy in dx2's dtype), partial dw."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BH)
    mc = cols < H
    w = tl.load(w_ptr + cols, mask=mc, other=0.0).to(tl.float32)
    dw = tl.zeros([BH], dtype=tl.float32)
    for i in range(TILES):
        r0 = (pid * TILES + i) * BR
        if r0 < T:
            rows = (r0 + tl.arange(0, BR)).to(tl.int64)
            mr = rows < T
            m = mr[:, None] & mc[None, :]
            x = _load_x(x_ptr, r_ptr, rows, cols, m, stride_x, stride_r, HAS_R, ROUND)
            rstd = tl.load(rstd_ptr + rows, mask=mr, other=0.0)
            g = tl.load(dout_ptr + rows[:, None] * stride_do + cols[None, :], mask=m, other=0.0).to(tl.float32)
            xhat = x * rstd[:, None]
            wg = g * w[None, :]
            c = tl.sum(xhat * wg, axis=1) / H
            dx = (wg - xhat * c[:, None]) * rstd[:, None]
            if HAS_DRES:
                dx += tl.load(dres_ptr + rows[:, None] * stride_dr + cols[None, :], mask=m, other=0.0).to(tl.float32)
            tl.store(dx_ptr + rows[:, None] * stride_dx + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m)
            if DX2:
                tl.store(dx2_ptr + rows[:, None] * stride_dx2 + cols[None, :], dx.to(dx2_ptr.dtype.element_ty),
                         mask=m)
            dw += tl.sum(g * xhat, axis=0)
    tl.store(dw_ptr + pid * H + cols, dw, mask=mc)

"""The varlen causal conv1d as a torch custom op (``rerankers::causal_conv1d_fwd`` / ``_bwd``) with
autograd, called directly in eager mode (:mod:`.eager`); launches the kernels of :mod:`.conv_triton`
(no host synchronisation)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .eager import eager_autograd, use_direct
from .scan_op import _next_pow2, interpreting, log_s
from .segments import cdiv

# (rows per chunk, warps, row blocks aimed at) of the forward and backward walks; channels per
# program = 32 * warps. Module-level so the benchmark can sweep them; chosen on an H100 (BENCHMARKS.md).
FWD_TILES = (16, 4, 64)
BWD_TILES = (8, 4, 64)
INTERP_TILES = (8, 1, 4)


def _rowmajor(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _cu(cu_seqlens: Tensor) -> Tensor:
    return cu_seqlens.to(torch.int32).contiguous()


def _walk_grid(T: int, tiles: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """(rows per chunk BT, chunks per program R, row blocks, warps) of a walk over T rows: R is the
    power of two (<= 128) that gives about the aimed-at number of row blocks."""
    BT, warps, blocks = INTERP_TILES if interpreting() else tiles
    R = min(_next_pow2(cdiv(T, BT * blocks)), 128)
    return BT, R, cdiv(T, BT * R), warps


def _conv_fwd_impl(x: Tensor, weight: Tensor, bias: Optional[Tensor], cu_seqlens: Tensor,
                   silu: bool) -> Tensor:
    """Returns y (T, D) in x's dtype."""
    from .conv_triton import _conv_fwd_walk_kernel
    x = _rowmajor(x)
    weight = weight.contiguous()
    T, Dm = x.shape
    S = cu_seqlens.numel() - 1
    y = torch.empty((T, Dm), dtype=x.dtype, device=x.device)
    if T > 0 and S > 0:
        BT, R, n_rb, warps = _walk_grid(T, FWD_TILES)
        _conv_fwd_walk_kernel[(n_rb, cdiv(Dm, 32 * warps))](
            x, weight, bias if bias is not None else weight, y, _cu(cu_seqlens), x.stride(0), y.stride(0), T, Dm, S,
            W=weight.shape[1], LOG_S=log_s(S), HAS_BIAS=bias is not None, SILU=silu, BT=BT, R=R, BD=32 * warps,
            num_warps=warps)
    return y


causal_conv1d_fwd = torch.library.custom_op("rerankers::causal_conv1d_fwd", mutates_args=())(_conv_fwd_impl)


@causal_conv1d_fwd.register_fake
def _(x, weight, bias, cu_seqlens, silu):
    return torch.empty_like(x)


def _conv_bwd_impl(dy: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], cu_seqlens: Tensor,
                   silu: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Returns dx (x's dtype), dweight, dbias (empty where bias is None); dW/dbias are summed in fp32
    per row block by the kernel and over row blocks here (a fixed order: deterministic)."""
    from .conv_triton import _conv_bwd_walk_kernel
    x, dy = _rowmajor(x), _rowmajor(dy)
    weight = weight.contiguous()
    T, Dm = x.shape
    W = weight.shape[1]
    S = cu_seqlens.numel() - 1
    if T == 0 or S == 0:
        return (torch.zeros_like(x), torch.zeros_like(weight),
                torch.zeros_like(bias) if bias is not None else x.new_empty((0,)))
    BT, R, n_rb, warps = _walk_grid(T, BWD_TILES)
    dx = torch.empty((T, Dm), dtype=x.dtype, device=x.device)
    part = torch.empty((n_rb, W + 1, Dm), dtype=torch.float32, device=x.device)
    _conv_bwd_walk_kernel[(n_rb, cdiv(Dm, 32 * warps))](
        x, weight, bias if bias is not None else weight, dy, _cu(cu_seqlens), dx, part,
        x.stride(0), dy.stride(0), dx.stride(0), T, Dm, S,
        W=W, LOG_S=log_s(S), HAS_BIAS=bias is not None, SILU=silu, BT=BT, R=R, BD=32 * warps, num_warps=warps)
    tot = part.sum(0)
    dw = tot[:W].t().to(weight.dtype, memory_format=torch.contiguous_format, copy=True)
    db = tot[W].to(bias.dtype, copy=True) if bias is not None else x.new_empty((0,))
    return dx, dw, db


causal_conv1d_bwd = torch.library.custom_op("rerankers::causal_conv1d_bwd", mutates_args=())(_conv_bwd_impl)


@causal_conv1d_bwd.register_fake
def _(dy, x, weight, bias, cu_seqlens, silu):
    return (torch.empty_like(x), torch.empty_like(weight),
            torch.empty_like(bias) if bias is not None else x.new_empty((0,)))


def _setup_context(ctx, inputs, output):
    x, weight, bias, cu_seqlens, silu = inputs
    ctx.save_for_backward(x, weight, bias, cu_seqlens)
    ctx.silu = silu
    ctx.has_bias = bias is not None


def _backward(ctx, dy):
    x, weight, bias, cu_seqlens = ctx.saved_tensors
    bwd = _conv_bwd_impl if getattr(ctx, "direct", False) else causal_conv1d_bwd
    dx, dw, db = bwd(dy, x, weight, bias, cu_seqlens, ctx.silu)
    return dx, dw, db if ctx.has_bias else None, None, None


causal_conv1d_fwd.register_autograd(_backward, setup_context=_setup_context)
_conv_direct = eager_autograd(_conv_fwd_impl, _setup_context, _backward)


def causal_conv1d_triton(x: Tensor, weight: Tensor, bias: Optional[Tensor], cu_seqlens: Tensor,
                         activation: Optional[str] = "silu") -> Tensor:
    """Triton varlen causal conv1d (see :func:`rerankers.kernels.causal_conv1d_varlen`)."""
    if not x.is_cuda and not interpreting():
        raise RuntimeError("the Triton causal conv1d needs CUDA tensors (or TRITON_INTERPRET=1 on the CPU); "
                           "use backend='reference' on the CPU")
    op = _conv_direct if use_direct() else causal_conv1d_fwd
    return op(x, weight, bias, cu_seqlens, activation is not None)

"""The Triton varlen causal conv1d: its config, the launchers, the custom ops with their autograd
formula, and the public function (kernels: :mod:`.forward`, :mod:`.backward`).

No host synchronisation. The forward and the backward are the custom ops
``rerankers::causal_conv1d_fwd`` / ``_bwd`` (``torch.compile`` traces around them); eager calls run
the same implementations without the custom-op dispatch (:mod:`rerankers.kernels.custom_op`).
Imports triton: import it only where the Triton backend runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..custom_op import config_args, kernel_op
from ..triton_utils import cdiv, check_device, int32_cu, interpreting, launch, log_s, next_pow2, row_major
from .backward import _conv_bwd_walk_kernel
from .forward import _conv_fwd_walk_kernel


@dataclass(frozen=True)
class ConvConfig:
    """Work split of the Triton conv walks (see :mod:`.forward`), forward and backward (``_bwd``).

    block_t: rows per chunk (a power of two: at most 64 in the forward, 32 in the backward, whose
    start masks span block_t + 4 rows of an int64); warps: warps per program, one channel per thread
    (32 * warps channels per program); row_blocks: row blocks aimed at (each program walks the
    power of two <= 128 of chunks that gives about that many).
    """
    block_t: int = 16
    warps: int = 4
    row_blocks: int = 64
    block_t_bwd: int = 8
    warps_bwd: int = 4
    row_blocks_bwd: int = 64


# chosen on an H100 (BENCHMARKS.md)
DEFAULT_CONFIG = ConvConfig()
INTERPRET_CONFIG = ConvConfig(block_t=8, warps=1, row_blocks=4, block_t_bwd=8, warps_bwd=1, row_blocks_bwd=4)


def _check_config(cfg: ConvConfig) -> None:
    for name, most in (("block_t", 64), ("block_t_bwd", 32)):
        v = getattr(cfg, name)
        if v & (v - 1) or not 1 <= v <= most:
            raise ValueError(f"{name} must be a power of two in 1..{most} (the start masks are int64), got {v}")


def _walk_grid(T: int, block_t: int, warps: int, row_blocks: int) -> tuple[int, int, int]:
    """(chunks per program R, row blocks, channels per program) of a walk over T rows: R is the
    power of two (<= 128) that gives about ``row_blocks`` row blocks."""
    R = min(next_pow2(cdiv(T, block_t * row_blocks)), 128)
    return R, cdiv(T, block_t * R), 32 * warps


def launch_forward(x: Tensor, weight: Tensor, bias: Tensor | None, cu_seqlens: Tensor, silu: bool,
                   cfg: ConvConfig) -> Tensor:
    """Returns y (T, D) in x's dtype."""
    x = row_major(x)
    weight = weight.contiguous()
    T, Dm = x.shape
    S = cu_seqlens.numel() - 1
    y = torch.empty((T, Dm), dtype=x.dtype, device=x.device)
    if T > 0 and S > 0:
        R, n_rb, BD = _walk_grid(T, cfg.block_t, cfg.warps, cfg.row_blocks)
        launch(_conv_fwd_walk_kernel, (n_rb, cdiv(Dm, BD)),
            x, weight, bias if bias is not None else weight, y, int32_cu(cu_seqlens), x.stride(0), y.stride(0), T, Dm,
            S, W=weight.shape[1], LOG_S=log_s(S), HAS_BIAS=bias is not None, SILU=silu, BT=cfg.block_t, R=R, BD=BD,
            num_warps=cfg.warps)
    return y


def launch_backward(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, cu_seqlens: Tensor, silu: bool,
                    cfg: ConvConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Returns dx (x's dtype), dweight, dbias (empty where bias is None); dW/dbias are summed in fp32
    per row block by the kernel and over row blocks here (a fixed order: deterministic)."""
    x, dy = row_major(x), row_major(dy)
    weight = weight.contiguous()
    T, Dm = x.shape
    W = weight.shape[1]
    S = cu_seqlens.numel() - 1
    if T == 0 or S == 0:
        return (torch.zeros_like(x), torch.zeros_like(weight),
                torch.zeros_like(bias) if bias is not None else x.new_empty((0,)))
    R, n_rb, BD = _walk_grid(T, cfg.block_t_bwd, cfg.warps_bwd, cfg.row_blocks_bwd)
    dx = torch.empty((T, Dm), dtype=x.dtype, device=x.device)
    part = torch.empty((n_rb, W + 1, Dm), dtype=torch.float32, device=x.device)
    launch(_conv_bwd_walk_kernel, (n_rb, cdiv(Dm, BD)),
        x, weight, bias if bias is not None else weight, dy, int32_cu(cu_seqlens), dx, part,
        x.stride(0), dy.stride(0), dx.stride(0), T, Dm, S,
        W=W, LOG_S=log_s(S), HAS_BIAS=bias is not None, SILU=silu, BT=cfg.block_t_bwd, R=R, BD=BD,
        num_warps=cfg.warps_bwd)
    tot = part.sum(0)
    dw = tot[:W].t().to(weight.dtype, memory_format=torch.contiguous_format, copy=True)
    db = tot[W].to(bias.dtype, copy=True) if bias is not None else x.new_empty((0,))
    return dx, dw, db


# ---- the custom ops (the config as its six ints, in field order) and their autograd formula
def _fwd_impl(x: Tensor, weight: Tensor, bias: Tensor | None, cu_seqlens: Tensor, silu: bool, block_t: int,
              warps: int, row_blocks: int, block_t_bwd: int, warps_bwd: int, row_blocks_bwd: int) -> Tensor:
    cfg = ConvConfig(block_t, warps, row_blocks, block_t_bwd, warps_bwd, row_blocks_bwd)
    return launch_forward(x, weight, bias, cu_seqlens, silu, cfg)


def _fwd_fake(x, weight, bias, cu_seqlens, silu, *config):
    return torch.empty_like(x)


def _bwd_impl(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, cu_seqlens: Tensor, silu: bool,
              block_t: int, warps: int, row_blocks: int, block_t_bwd: int, warps_bwd: int, row_blocks_bwd: int
              ) -> tuple[Tensor, Tensor, Tensor]:
    cfg = ConvConfig(block_t, warps, row_blocks, block_t_bwd, warps_bwd, row_blocks_bwd)
    return launch_backward(dy, x, weight, bias, cu_seqlens, silu, cfg)


def _bwd_fake(dy, x, weight, bias, cu_seqlens, silu, *config):
    return (torch.empty_like(x), torch.empty_like(weight),
            torch.empty_like(bias) if bias is not None else x.new_empty((0,)))


def _setup_context(ctx, inputs, output):
    x, weight, bias, cu_seqlens = inputs[:4]
    ctx.save_for_backward(x, weight, bias, cu_seqlens)
    ctx.args = inputs[4:]  # silu and the config
    ctx.has_bias = bias is not None


def _backward(ctx, bwd, dy):
    x, weight, bias, cu_seqlens = ctx.saved_tensors
    dx, dw, db = bwd(dy, x, weight, bias, cu_seqlens, *ctx.args)
    return (dx, dw, db if ctx.has_bias else None) + (None,) * (1 + len(ctx.args))


_op = kernel_op("causal_conv1d", _fwd_impl, _fwd_fake, _bwd_impl, _bwd_fake, _setup_context, _backward)


def causal_conv1d_triton(x: Tensor, weight: Tensor, bias: Tensor | None, cu_seqlens: Tensor,
                         activation: str | None = "silu", config: ConvConfig | None = None,
                         direct: bool = True) -> Tensor:
    """Triton varlen causal conv1d (see :func:`rerankers.kernels.causal_conv1d_varlen`).

    config: the work split (None: :data:`DEFAULT_CONFIG`, or :data:`INTERPRET_CONFIG` under the
    interpreter); direct: eager calls skip the custom-op dispatch (False: always the custom ops).
    """
    check_device(x, "causal conv1d")
    cfg = config or (INTERPRET_CONFIG if interpreting() else DEFAULT_CONFIG)
    _check_config(cfg)
    return _op(x, weight, bias, cu_seqlens, activation is not None, *config_args(cfg), direct=direct)

"""The Triton fused residual add + RMSNorm: its config, the launchers, the custom ops with their autograd
formula, and the public function (kernels: :mod:`.forward`, :mod:`.backward`; semantics:
:mod:`.reference`).

The forward and the backward are the custom ops ``rerankers::add_rmsnorm_fwd`` / ``_bwd``
(``torch.compile`` traces around them); eager calls run the same implementations without the
custom-op dispatch (:mod:`rerankers.kernels.custom_op`). No host synchronisation. Imports triton:
import it only where the Triton backend runs.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from ..custom_op import config_args, kernel_op
from ..triton_utils import cdiv, check_device, interpreting, launch, next_pow2, row_major
from .backward import _add_rmsnorm_bwd_kernel
from .forward import _add_rmsnorm_fwd_kernel
from .reference import check_add_rmsnorm_shapes, residual_out_dtype

MAX_H = 16384  # one block of columns per row: larger rows would need a column loop


@dataclass(frozen=True)
class NormConfig:
    """Work split of the Triton add+RMSNorm (0 = chosen from H, and for ``programs_bwd`` from the card).

    rows / rows_bwd: rows per block (a power of two); warps / warps_bwd: warps per program;
    programs_bwd: backward programs aimed at (each walks a power of two of row blocks and writes one
    partial dw row; 0 = four per SM).
    """
    rows: int = 0
    warps: int = 0
    rows_bwd: int = 0
    warps_bwd: int = 0
    programs_bwd: int = 0


DEFAULT_CONFIG = NormConfig()
INTERPRET_CONFIG = NormConfig(rows=4, warps=1, rows_bwd=4, warps_bwd=1, programs_bwd=2)
ELEMENTS = 4096  # elements per (rows, BH) tile that the automatic rows aim at


def _check_config(cfg: NormConfig) -> None:
    for name in ("rows", "rows_bwd"):
        v = getattr(cfg, name)
        if v < 0 or v & (v - 1):
            raise ValueError(f"{name} must be 0 (auto) or a power of two, got {v}")
    for name in ("warps", "warps_bwd", "programs_bwd"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")


def _tile(H: int, rows: int, warps: int) -> tuple[int, int, int]:
    """(BH, rows per block, warps): BH = next_pow2(H); automatic rows give ~ELEMENTS per tile (1..32
    rows), automatic warps ~16 elements per thread (1..8 warps)."""
    BH = next_pow2(H)
    BR = rows or max(1, min(32, ELEMENTS // BH))
    nw = warps or max(1, min(8, BR * BH // 512))
    return BH, BR, nw


@functools.lru_cache(maxsize=8)
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _round_code(hidden: Tensor, residual: Tensor | None) -> int:
    """How the kernels round hidden + residual: to bf16 (1) or fp16 (2) where torch's sum has that
    dtype, else not at all (0: fp32 sums)."""
    if residual is None:
        return 0
    add = torch.promote_types(hidden.dtype, residual.dtype)
    return {torch.bfloat16: 1, torch.float16: 2}.get(add, 0)


def launch_forward(hidden: Tensor, residual: Tensor | None, weight: Tensor, eps: float, residual_in_fp32: bool,
                   out_dtype: torch.dtype, store_residual: bool, cfg: NormConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Returns out (T, H) in out_dtype, residual_out (T, H) (empty (0,) unless store_residual), rstd (T,) fp32."""
    hidden, residual = row_major(hidden), row_major(residual)
    weight = weight.contiguous()
    T, H = hidden.shape
    out = torch.empty((T, H), dtype=out_dtype, device=hidden.device)
    rdt = residual_out_dtype(hidden.dtype, None if residual is None else residual.dtype, residual_in_fp32)
    res = torch.empty((T, H) if store_residual else (0,), dtype=rdt, device=hidden.device)
    rstd = torch.empty((T,), dtype=torch.float32, device=hidden.device)
    if T > 0:
        BH, BR, nw = _tile(H, cfg.rows, cfg.warps)
        r = residual if residual is not None else hidden
        launch(_add_rmsnorm_fwd_kernel, (cdiv(T, BR),),
            hidden, r, weight, out, res if store_residual else out, rstd, T, H, hidden.stride(0), r.stride(0),
            out.stride(0), res.stride(0) if store_residual else 0, eps, HAS_R=residual is not None,
            STORE_RES=store_residual, ROUND=_round_code(hidden, residual), BR=BR, BH=BH, num_warps=nw)
    return out, res, rstd


def launch_backward(dout: Tensor, dres: Tensor | None, x: Tensor, residual: Tensor | None, weight: Tensor,
                    rstd: Tensor, round_code: int, dh_dtype: torch.dtype, dr_dtype: torch.dtype, cfg: NormConfig
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """x: the kept residual_out, or hidden (with ``residual``: x = hidden + residual, rounded as
    ``round_code`` says). Returns dx (T, H) in dh_dtype, its copy in dr_dtype (empty (0,) where
    dr_dtype is dh_dtype), dweight (H,) in weight's dtype (per-program fp32 partials summed here)."""
    dout, dres, x, residual = row_major(dout), row_major(dres), row_major(x), row_major(residual)
    weight = weight.contiguous()
    T, H = x.shape
    split = dr_dtype != dh_dtype
    dx = torch.empty((T, H), dtype=dh_dtype, device=x.device)
    dx2 = torch.empty((T, H) if split else (0,), dtype=dr_dtype, device=x.device)
    if T == 0:
        return dx, dx2, torch.zeros_like(weight)
    BH, BR, nw = _tile(H, cfg.rows_bwd, cfg.warps_bwd)
    want = cfg.programs_bwd or (4 * (_num_sms(x.device.index or 0) if x.is_cuda else 4))
    blocks = cdiv(T, BR)
    tiles = next_pow2(cdiv(blocks, want))  # a power of two: few distinct compiled kernels
    programs = cdiv(blocks, tiles)
    part = torch.empty((programs, H), dtype=torch.float32, device=x.device)
    r = residual if residual is not None else x
    d = dres if dres is not None else dout
    launch(_add_rmsnorm_bwd_kernel, (programs,),
        dout, d, x, r, weight, rstd, dx, dx2 if split else dx, part, T, H, dout.stride(0), d.stride(0), x.stride(0),
        r.stride(0), dx.stride(0), dx2.stride(0) if split else 0, HAS_DRES=dres is not None,
        HAS_R=residual is not None, ROUND=round_code, DX2=split, BR=BR, BH=BH, TILES=tiles, num_warps=nw)
    return dx, dx2, part.sum(0).to(weight.dtype)


# ---- the custom ops (the config as its five ints, in field order) and their autograd formula
def _fwd_impl(hidden: Tensor, residual: Tensor | None, weight: Tensor, eps: float, residual_in_fp32: bool,
              out_dtype: torch.dtype, store_residual: bool, rows: int, warps: int, rows_bwd: int, warps_bwd: int,
              programs_bwd: int) -> tuple[Tensor, Tensor, Tensor]:
    cfg = NormConfig(rows, warps, rows_bwd, warps_bwd, programs_bwd)
    return launch_forward(hidden, residual, weight, eps, residual_in_fp32, out_dtype, store_residual, cfg)


def _fwd_fake(hidden, residual, weight, eps, residual_in_fp32, out_dtype, store_residual, *config):
    T, H = hidden.shape
    rdt = residual_out_dtype(hidden.dtype, None if residual is None else residual.dtype, residual_in_fp32)
    return (hidden.new_empty((T, H), dtype=out_dtype), hidden.new_empty((T, H) if store_residual else (0,), dtype=rdt),
            hidden.new_empty((T,), dtype=torch.float32))


def _bwd_impl(dout: Tensor, dres: Tensor | None, x: Tensor, residual: Tensor | None, weight: Tensor, rstd: Tensor,
              round_code: int, dh_dtype: torch.dtype, dr_dtype: torch.dtype, rows: int, warps: int, rows_bwd: int,
              warps_bwd: int, programs_bwd: int) -> tuple[Tensor, Tensor, Tensor]:
    cfg = NormConfig(rows, warps, rows_bwd, warps_bwd, programs_bwd)
    return launch_backward(dout, dres, x, residual, weight, rstd, round_code, dh_dtype, dr_dtype, cfg)


def _bwd_fake(dout, dres, x, residual, weight, rstd, round_code, dh_dtype, dr_dtype, *config):
    dx2_shape = x.shape if dr_dtype != dh_dtype else (0,)
    return x.new_empty(x.shape, dtype=dh_dtype), x.new_empty(dx2_shape, dtype=dr_dtype), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    hidden, residual, weight, _eps, _fp32, out_dtype, store_residual = inputs[:7]
    _, res, rstd = output
    # the backward's x: the kept residual_out, else hidden (+ residual, recomputed)
    x, r = (res, None) if store_residual else (hidden, residual)
    ctx.save_for_backward(x, r, weight, rstd)
    ctx.has_residual, ctx.stored = residual is not None, store_residual
    ctx.round = _round_code(hidden, residual) if r is not None else 0
    ctx.dtypes = (hidden.dtype, residual.dtype if residual is not None else hidden.dtype)
    ctx.out_dtype, ctx.config = out_dtype, inputs[7:]


def _backward(ctx, bwd, dout, dres, _drstd):
    x, r, weight, rstd = ctx.saved_tensors
    if dout is None:
        dout = x.new_zeros(x.shape, dtype=ctx.out_dtype)
    if not ctx.stored:  # residual_out was not an output of the op (an empty placeholder)
        dres = None
    dh, dr, dw = bwd(dout, dres, x, r, weight, rstd, ctx.round, *ctx.dtypes, *ctx.config)
    d_residual = (dr if ctx.dtypes[1] != ctx.dtypes[0] else dh) if ctx.has_residual else None
    return (dh, d_residual, dw) + (None,) * (4 + len(ctx.config))


_op = kernel_op("add_rmsnorm", _fwd_impl, _fwd_fake, _bwd_impl, _bwd_fake, _setup_context, _backward)


def add_rmsnorm_triton(hidden: Tensor, residual: Tensor | None, weight: Tensor, eps: float,
                       residual_in_fp32: bool = False, out_dtype: torch.dtype | None = None,
                       keep_residual: bool = True, config: NormConfig | None = None,
                       direct: bool = True) -> tuple[Tensor, Tensor | None]:
    """Triton fused residual add + RMSNorm (see :func:`rerankers.kernels.add_rmsnorm`), computed in fp32.

    hidden, residual: (T, H) (residual may be None), weight: (H,). Returns (out (T, H) in out_dtype
    (None: weight's), residual_out (T, H) or None unless keep_residual). config: the work split (None:
    :data:`DEFAULT_CONFIG`, or :data:`INTERPRET_CONFIG` under the interpreter); direct: eager calls
    skip the custom-op dispatch (False: always the custom ops).
    """
    check_device(hidden, "add+RMSNorm")
    check_add_rmsnorm_shapes(hidden, residual, weight)
    if hidden.shape[1] > MAX_H:
        raise ValueError(f"the Triton add+RMSNorm takes H <= {MAX_H} (one block of columns), got {hidden.shape[1]}")
    cfg = config or (INTERPRET_CONFIG if interpreting() else DEFAULT_CONFIG)
    _check_config(cfg)
    rdt = residual_out_dtype(hidden.dtype, None if residual is None else residual.dtype, residual_in_fp32)
    # residual_out is hidden itself where there is nothing to add or cast: not written, its gradient
    # reaches hidden through autograd directly
    store = keep_residual and (residual is not None or rdt != hidden.dtype)
    out, res, _ = _op(hidden, residual, weight, float(eps), residual_in_fp32, out_dtype or weight.dtype, store,
                      *config_args(cfg), direct=direct)
    if not keep_residual:
        return out, None
    return out, (res if store else hidden)

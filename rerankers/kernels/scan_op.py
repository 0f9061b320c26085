"""The varlen selective scan as a torch custom op (``rerankers::selective_scan_fwd`` / ``_bwd``)
with autograd, so that ``torch.compile`` traces around it. Launches the kernels of
:mod:`.scan_triton`; buffers are sized from upper bounds (no host synchronisation).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .segments import build_seginfo, cdiv, n_chunk_max, n_seg_max, n_seg_slots


@dataclass(frozen=True)
class ScanConfig:
    """Tile sizes and backward variant.

    block_t: chunk length (the forward stores the state at every chunk start; backward unit);
    seg_len: tokens per program (multiple of block_t; longer sequences are split and carried);
    bd_fwd / bd_bwd: channels per program; warps_fwd / warps_bwd: warps per program.
    Backward variants: bwd_seq (sequential steps, states recomputed into a per-program scratch:
    fastest measured), else the chunked-scan kernel, with time_in_thread (one channel per thread)
    and scratch (carries / dA in a per-program scratch instead of register tiles) as options.
    """
    block_t: int = 32
    seg_len: int = 256
    bd_fwd: int = 64
    bd_bwd: int = 32
    warps_fwd: int = 4
    warps_bwd: int = 4
    time_in_thread: bool = False
    scratch: bool = False
    bwd_seq: bool = False


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# best measured on an H100 (benchmarks/KERNEL_NOTES.md): sequential backward, 8-step chunks
DEFAULT_CONFIG = ScanConfig(block_t=8, seg_len=256, bd_fwd=128, bd_bwd=128, warps_fwd=4, warps_bwd=4, bwd_seq=True)
INTERPRET_CONFIG = ScanConfig(block_t=8, seg_len=32, bd_fwd=64, bd_bwd=64, warps_fwd=1, warps_bwd=1, bwd_seq=True)


KERNEL_STATS: dict = {}  # last launch per kernel: registers / spills (benchmark notes)


def _record(name: str, compiled) -> None:
    try:
        KERNEL_STATS[name] = dict(n_regs=int(compiled.n_regs), n_spills=int(compiled.n_spills))
    except (AttributeError, TypeError, ValueError):  # interpreter / other Triton versions
        pass


def _next_pow2(x: int) -> int:
    return 1 << max(int(x) - 1, 0).bit_length()


def _rowmajor(x: Optional[Tensor]) -> Optional[Tensor]:
    """Keep row-strided views (e.g. slices of a projection); only the last dim must be unit-stride."""
    if x is None:
        return None
    return x if x.stride(-1) == 1 else x.contiguous()


@torch.library.custom_op("rerankers::selective_scan_fwd", mutates_args=())
def selective_scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       z: Optional[Tensor], delta_bias: Optional[Tensor], cu_seqlens: Tensor,
                       delta_softplus: bool, block_t: int, seg_len: int, bd_fwd: int, warps_fwd: int,
                       bd_bwd: int, warps_bwd: int, time_in_thread: bool, scratch: bool,
                       bwd_seq: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(bd_bwd, warps_bwd are kept for the backward.) Returns y (T, D), chunk-start states (n_chunk, D, N) fp32, per-segment delta sums
    (n_slots, D) fp32, seginfo (3, n_seg) int32."""
    from .scan_triton import _scan_fwd_kernel
    u, delta, B, C, z = (_rowmajor(t) for t in (u, delta, B, C, z))
    A = A.contiguous()
    T, Dm = u.shape
    N = A.shape[1]
    S = cu_seqlens.numel() - 1
    n_seg, n_chunk, n_slots = n_seg_max(T, S, seg_len), n_chunk_max(T, S, block_t), n_seg_slots(T, seg_len)
    cu = cu_seqlens.to(torch.int32).contiguous()
    seginfo = build_seginfo(cu, T, seg_len, block_t)
    y = torch.empty((T, Dm), dtype=u.dtype, device=u.device)
    states = torch.empty((n_chunk, Dm, N), dtype=torch.float32, device=u.device)
    send = torch.empty((n_slots, Dm, N), dtype=torch.float32, device=u.device)
    dtsum = torch.empty((n_slots, Dm), dtype=torch.float32, device=u.device)
    if T == 0 or S == 0:
        return y, states, dtsum, seginfo
    Dp = D if D is not None else u
    zp = z if z is not None else u
    bp = delta_bias if delta_bias is not None else u
    grid = (n_seg, cdiv(Dm, bd_fwd))
    maxj = max(2, _next_pow2(n_slots))
    for local in (True, False):
        k = _scan_fwd_kernel[grid](
            u, delta, A, B, C, Dp, zp, bp, y, states, send, dtsum, seginfo, cu,
            u.stride(0), delta.stride(0), B.stride(0), C.stride(0), zp.stride(0), y.stride(0),
            n_seg, Dm, N,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=delta_softplus, LOCAL_ONLY=local, SEG=seg_len, BT=block_t, BD=bd_fwd,
            NP=_next_pow2(N), MAXJ=maxj, num_warps=warps_fwd)
        _record("fwd_local" if local else "fwd", k)
    return y, states, dtsum, seginfo


@selective_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, cu_seqlens, delta_softplus, block_t, seg_len, bd_fwd, warps_fwd,
      bd_bwd, warps_bwd, time_in_thread, scratch, bwd_seq):
    T, Dm = u.shape
    N = A.shape[1]
    S = cu_seqlens.shape[0] - 1
    return (u.new_empty((T, Dm)), u.new_empty((n_chunk_max(T, S, block_t), Dm, N), dtype=torch.float32),
            u.new_empty((n_seg_slots(T, seg_len), Dm), dtype=torch.float32),
            u.new_empty((3, n_seg_max(T, S, seg_len)), dtype=torch.int32))


@torch.library.custom_op("rerankers::selective_scan_bwd", mutates_args=())
def selective_scan_bwd(dy: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                       cu_seqlens: Tensor, states: Tensor, dtsum: Tensor, seginfo: Tensor,
                       delta_softplus: bool, block_t: int, seg_len: int, bd_bwd: int, warps_bwd: int,
                       time_in_thread: bool, scratch: bool, bwd_seq: bool
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns du, ddelta, dA, dB, dC, dD, dz, ddelta_bias (empty tensors for absent inputs)."""
    from .scan_bwd_triton import _scan_bwd_kernel, _scan_bwd_seq_kernel
    from .scan_triton import _scan_bwd_local_kernel
    dy, u, delta, B, C, z = (_rowmajor(t) for t in (dy, u, delta, B, C, z))
    A = A.contiguous()
    T, Dm = u.shape
    N = A.shape[1]
    S = cu_seqlens.numel() - 1
    n_seg, n_slots = seginfo.shape[1], dtsum.shape[0]
    cu = cu_seqlens.to(torch.int32).contiguous()
    f32 = dict(dtype=torch.float32, device=u.device)
    du = torch.empty((T, Dm), dtype=u.dtype, device=u.device)
    ddelta = torch.empty((T, Dm), dtype=delta.dtype, device=u.device)
    dz = torch.empty((T, Dm), dtype=z.dtype, device=u.device) if z is not None else u.new_empty((0,))
    dA = torch.zeros((Dm, N), **f32)
    dB = torch.zeros((T, N), **f32)
    dC = torch.zeros((T, N), **f32)
    dD = torch.zeros((Dm,), **f32)
    dbias = torch.zeros((Dm,), **f32)
    gin = torch.empty((n_slots, Dm, N), **f32)
    if T > 0 and S > 0:
        Dp = D if D is not None else u
        zp = z if z is not None else u
        dzp = dz if z is not None else du
        bp = delta_bias if delta_bias is not None else u
        grid = (n_seg, cdiv(Dm, bd_bwd))
        flags = dict(HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
                     SEG=seg_len, BT=block_t, BD=bd_bwd, NP=_next_pow2(N))
        _scan_bwd_local_kernel[grid](dy, delta, A, C, zp, bp, gin, seginfo, cu,
                                     dy.stride(0), delta.stride(0), C.stride(0), zp.stride(0), n_seg, Dm, N,
                                     num_warps=warps_bwd, **flags)
        if bwd_seq:
            hs = torch.empty((n_seg * grid[1] * block_t * bd_bwd * _next_pow2(N),), **f32)
            k = _scan_bwd_seq_kernel[grid](
                dy, u, delta, A, B, C, Dp, zp, bp, states, dtsum, gin, seginfo, cu,
                du, ddelta, dzp, dB, dC, dA, dD, dbias, hs,
                dy.stride(0), u.stride(0), delta.stride(0), B.stride(0), C.stride(0), zp.stride(0),
                du.stride(0), ddelta.stride(0), dzp.stride(0), n_seg, Dm, N,
                HAS_D=D is not None, MAXJ=max(2, _next_pow2(n_slots)), num_warps=warps_bwd, **flags)
        else:
            scr = torch.empty((n_seg * grid[1] * 3 * bd_bwd * _next_pow2(N) if scratch else 1,), **f32)
            k = _scan_bwd_kernel[grid](
                dy, u, delta, A, B, C, Dp, zp, bp, states, dtsum, gin, seginfo, cu,
                du, ddelta, dzp, dB, dC, dA, dD, dbias, scr,
                dy.stride(0), u.stride(0), delta.stride(0), B.stride(0), C.stride(0), zp.stride(0),
                du.stride(0), ddelta.stride(0), dzp.stride(0), n_seg, Dm, N, 1,
                HAS_D=D is not None, MAXJ=max(2, _next_pow2(n_slots)),
                TIME_IN_THREAD=time_in_thread, SCRATCH=scratch, num_warps=warps_bwd, **flags)
        _record("bwd", k)
    else:
        du.zero_(), ddelta.zero_(), dz.zero_()
    dDo = dD.to(D.dtype) if D is not None else u.new_empty((0,))
    dbo = dbias.to(delta_bias.dtype) if delta_bias is not None else u.new_empty((0,))
    return du, ddelta, dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype), dDo, dz, dbo


@selective_scan_bwd.register_fake
def _(dy, u, delta, A, B, C, D, z, delta_bias, cu_seqlens, states, dtsum, seginfo, delta_softplus,
      block_t, seg_len, bd_bwd, warps_bwd, time_in_thread, scratch, bwd_seq):
    e = u.new_empty((0,))
    return (torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A), torch.empty_like(B),
            torch.empty_like(C), torch.empty_like(D) if D is not None else e,
            torch.empty_like(z) if z is not None else e,
            torch.empty_like(delta_bias) if delta_bias is not None else e)


def _setup_context(ctx, inputs, output):
    (u, delta, A, B, C, D, z, delta_bias, cu_seqlens, delta_softplus, block_t, seg_len, _, _,
     bd_bwd, warps_bwd, time_in_thread, scratch, bwd_seq) = inputs
    _, states, dtsum, seginfo = output
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, cu_seqlens, states, dtsum, seginfo)
    ctx.cfg = (delta_softplus, block_t, seg_len, bd_bwd, warps_bwd, time_in_thread, scratch, bwd_seq)
    ctx.has = (D is not None, z is not None, delta_bias is not None)


def _backward(ctx, dy, _ds, _dt, _si):
    u, delta, A, B, C, D, z, delta_bias, cu_seqlens, states, dtsum, seginfo = ctx.saved_tensors
    du, ddelta, dA, dB, dC, dD, dz, dbias = selective_scan_bwd(
        dy.contiguous(), u, delta, A, B, C, D, z, delta_bias, cu_seqlens, states, dtsum, seginfo, *ctx.cfg)
    has_D, has_z, has_bias = ctx.has
    return (du, ddelta, dA, dB, dC, dD if has_D else None, dz if has_z else None,
            dbias if has_bias else None, None, None, None, None, None, None, None, None, None, None, None)


selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                          z: Optional[Tensor], delta_bias: Optional[Tensor], cu_seqlens: Tensor,
                          delta_softplus: bool = True, config: Optional[ScanConfig] = None) -> Tensor:
    """Triton varlen selective scan (see :func:`rerankers.kernels.selective_scan_varlen`)."""
    if not u.is_cuda and not interpreting():
        raise RuntimeError("the Triton selective scan needs CUDA tensors (or TRITON_INTERPRET=1 on the CPU); "
                           "use backend='reference' on the CPU")
    cfg = config or (INTERPRET_CONFIG if interpreting() else DEFAULT_CONFIG)
    if cfg.seg_len % cfg.block_t:
        raise ValueError(f"seg_len {cfg.seg_len} must be a multiple of block_t {cfg.block_t}")
    y, _, _, _ = selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, cu_seqlens, delta_softplus,
                                    cfg.block_t, cfg.seg_len, cfg.bd_fwd, cfg.warps_fwd,
                                    cfg.bd_bwd, cfg.warps_bwd, cfg.time_in_thread, cfg.scratch,
                                    cfg.bwd_seq)
    return y

"""The Triton varlen SSD scan: launchers, the autograd function, and the public ``ssd_triton_varlen``
(kernels: :mod:`.forward`, :mod:`.backward`). Imports triton: import it only where the Triton backend runs.

Forward: three Triton launches (:mod:`.forward`), every buffer sized from T and the chunk size (no host
synchronisation). Backward, two choices (``backward=``):

- ``"triton"`` (the default): three Triton launches (:mod:`.backward`). The forward keeps, besides the
  inputs, the sequence ids (int32), the discretized dt and the per-sequence cumulative log-decays
  ((T, H) fp32 each), the state entering every chunk ((T / Q, H, P, N) fp32) and the chunks' passing
  log-decays; no (Q, Q) block is kept (the backward recomputes them per chunk).
- ``"chunked"``: keeps the inputs only and recomputes the forward through the PyTorch chunked form
  (:func:`.chunked.ssd_chunked_varlen`) under autograd, then differentiates it: the chunked form's
  gradients exactly, at the cost of its forward + backward (kept as the fallback and the check).

fp64 inputs run the chunked form (the kernels compute in fp32). Called through a plain
``torch.autograd.Function`` (no custom op yet: torch.compile is untested on this path).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..triton_utils import cdiv, check_device, interpreting, launch, next_pow2, row_major
from ..varlen import check_cu_seqlens, sequence_ids
from .backward import _ssd_chunk_bwd_kernel, _ssd_dstart_kernel, _ssd_state_passing_bwd_kernel
from .chunked import ssd_chunked_varlen
from .forward import _ssd_chunk_scan_kernel, _ssd_chunk_state_kernel, _ssd_state_passing_kernel
from .reference import NO_DT_LIMIT

BACKWARDS = ("triton", "chunked")   # the backward choices of ssd_triton_varlen (the first is the default)
MAX_CHUNK = 64   # a cap on the chunk length, to be set from measurements (benchmarks/bench_ssd_triton.py --chunks)
PASSING_BLOCK = 1024   # P·N entries of a head per program of the passing kernels
# warps per program of the per-chunk kernels (forward, backward); not tuned yet (benchmarks/bench_ssd_triton.py
# --warps-fwd / --warps-bwd override them); the interpreter ignores them
WARPS = {"fwd": 4, "bwd": 8}


def _block(n: int) -> int:
    """A tile dimension: the next power of two, at least 16 on the GPU (tl.dot's minimum)."""
    return max(next_pow2(n), 1 if interpreting() else 16)


def triton_chunk_size(chunk_size: int, T: int) -> int:
    """The chunk length the kernels use: ``chunk_size`` rounded down to a power of two (tl.arange needs
    one; the result does not depend on it beyond rounding), at most :data:`MAX_CHUNK` (the tiles hold a
    whole chunk: Mamba-2 configs ask for 256), no longer than T needs, at least 16 on the GPU."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    q = 1 << (int(min(chunk_size, MAX_CHUNK)).bit_length() - 1)
    return _block(min(q, next_pow2(T)))


@dataclass(frozen=True)
class _Launch:
    """What every launch of one call shares: shapes, tile sizes, dt options, dot precision."""
    T: int
    H: int
    P: int
    G: int
    N: int
    Q: int
    K: int
    BP: int
    BN: int
    has_limit: bool
    lo: float
    hi: float
    lowp: bool
    fp16: bool

    @classmethod
    def of(cls, x: Tensor, B: Tensor, chunk_size: int, dt_limit: tuple[float, float]) -> "_Launch":
        T, H, P = x.shape
        G, N = B.shape[1:]
        Q = triton_chunk_size(chunk_size, T)
        has_limit = tuple(dt_limit) != NO_DT_LIMIT
        lo, hi = (float(dt_limit[0]), float(dt_limit[1])) if has_limit else (0.0, 0.0)
        return cls(T, H, P, G, N, Q, cdiv(T, Q), _block(P), _block(N), has_limit, lo, hi,
                   x.dtype in (torch.bfloat16, torch.float16), x.dtype == torch.float16)

    def passing_block(self) -> int:
        return min(PASSING_BLOCK, next_pow2(self.P * self.N))


def ssd_forward_triton(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                       dt_bias: Tensor | None, cu_seqlens: Tensor, chunk_size: int, dt_softplus: bool,
                       dt_limit: tuple[float, float]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The three forward launches. T >= 1 and S >= 1; x, B, C with unit last stride. Returns y (T, H, P) in
    x's dtype and what the Triton backward needs: (seq, dtd, cs, start, ld)."""
    L = _Launch.of(x, B, chunk_size, dt_limit)
    T, H, P, N, K = L.T, L.H, L.P, L.N, L.K
    dev = x.device
    seq = sequence_ids(cu_seqlens, T).to(torch.int32)
    dtd = torch.empty((T, H), device=dev, dtype=torch.float32)
    cs = torch.empty((T, H), device=dev, dtype=torch.float32)
    start = torch.empty((K, H, P, N), device=dev, dtype=torch.float32)   # chunk end states, then (in place)
    ld = torch.empty((K, H), device=dev, dtype=torch.float32)            # the entering ones; passing log-decays
    y = torch.empty((T, H, P), device=dev, dtype=x.dtype)
    bias = dt_bias if dt_bias is not None else A
    launch(_ssd_chunk_state_kernel, (K, H),
        x, dt, A, B, bias, seq, dtd, cs, start, ld, T, H, P, N, H // L.G,
        x.stride(0), x.stride(1), dt.stride(0), dt.stride(1), B.stride(0), B.stride(1), L.lo, L.hi,
        Q=L.Q, BP=L.BP, BN=L.BN, HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus), HAS_LIMIT=L.has_limit,
        LOWP=L.lowp, LP_FP16=L.fp16, num_warps=WARPS["fwd"])
    blk = L.passing_block()
    launch(_ssd_state_passing_kernel, (H, cdiv(P * N, blk)), start, ld, start, K, H, P * N, BLOCK=blk)
    launch(_ssd_chunk_scan_kernel, (K, H),
        x, B, C, D if D is not None else A, seq, dtd, cs, start, y, T, H, P, N, H // L.G,
        x.stride(0), x.stride(1), B.stride(0), B.stride(1), C.stride(0), C.stride(1),
        Q=L.Q, BP=L.BP, BN=L.BN, HAS_D=D is not None, LOWP=L.lowp, LP_FP16=L.fp16, num_warps=WARPS["fwd"])
    return y, (seq, dtd, cs, start, ld)


def ssd_backward_triton(dy: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                        dt_bias: Tensor | None, saved: tuple[Tensor, ...], chunk_size: int, dt_softplus: bool,
                        dt_limit: tuple[float, float]) -> tuple[Tensor | None, ...]:
    """The three backward launches (:mod:`.backward`): (dx, ddt, dA, dB, dC, dD, d dt_bias), each in its
    input's dtype (None for an input that is None)."""
    seq, dtd, cs, start, ld = saved
    L = _Launch.of(x, B, chunk_size, dt_limit)
    T, H, P, G, N, K = L.T, L.H, L.P, L.G, L.N, L.K
    R = H // G
    dev = x.device
    f32 = dict(device=dev, dtype=torch.float32)
    dy = row_major(dy)
    dstart = torch.empty((K, H, P, N), **f32)
    launch(_ssd_dstart_kernel, (K, H), dy, C, seq, cs, dstart, T, H, P, N, R, dy.stride(0), dy.stride(1),
           C.stride(0), C.stride(1), Q=L.Q, BP=L.BP, BN=L.BN, LOWP=L.lowp, LP_FP16=L.fp16, num_warps=WARPS["fwd"])
    blk = L.passing_block()
    nblk = cdiv(P * N, blk)
    dld = torch.empty((K, H, nblk), **f32)
    launch(_ssd_state_passing_bwd_kernel, (H, nblk), dstart, start, ld, dstart, dld, K, H, P * N, BLOCK=blk)
    dstate = dstart   # in place: the gradient of each chunk's end state
    dld = dld.sum(-1).contiguous()
    dx = torch.empty((T, H, P), device=dev, dtype=x.dtype)
    ddt = torch.empty((T, H), device=dev, dtype=dt.dtype)
    dBh = torch.empty((T, H, N), **f32)
    dCh = torch.empty((T, H, N), **f32)
    dA, dD, dbias = (torch.zeros((K, H), **f32) for _ in range(3))
    bias = dt_bias if dt_bias is not None else A
    launch(_ssd_chunk_bwd_kernel, (K, H),
        x, dt, A, B, C, D if D is not None else A, bias, dy, seq, dtd, cs, start, dstate, dld,
        dx, ddt, dBh, dCh, dA, dD, dbias, T, H, P, N, R,
        x.stride(0), x.stride(1), dt.stride(0), dt.stride(1), B.stride(0), B.stride(1), C.stride(0), C.stride(1),
        dy.stride(0), dy.stride(1), L.lo, L.hi, Q=L.Q, BP=L.BP, BN=L.BN, HAS_BIAS=dt_bias is not None,
        SOFTPLUS=bool(dt_softplus), HAS_LIMIT=L.has_limit, HAS_D=D is not None, LOWP=L.lowp, LP_FP16=L.fp16,
        num_warps=WARPS["bwd"])
    dB = dBh.view(T, G, R, N).sum(2).to(B.dtype)
    dC = dCh.view(T, G, R, N).sum(2).to(C.dtype)
    return (dx, ddt, dA.sum(0).to(A.dtype), dB, dC, dD.sum(0).to(D.dtype) if D is not None else None,
            dbias.sum(0).to(dt_bias.dtype) if dt_bias is not None else None)


class _SSDTriton(torch.autograd.Function):
    """Triton forward; backward by the Triton kernels (``backward="triton"``: keeps seq, dtd, cs, the
    chunk-entering states and their log-decays) or by recomputation through the chunked PyTorch form
    (``"chunked"``: keeps the inputs only)."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, dt_bias, cu_seqlens, chunk_size, dt_softplus, dt_limit, backward):
        y, saved = ssd_forward_triton(x, dt, A, B, C, D, dt_bias, cu_seqlens, chunk_size, dt_softplus, dt_limit)
        ctx.cfg = (chunk_size, dt_softplus, dt_limit, backward)
        ctx.save_for_backward(x, dt, A, B, C, D, dt_bias, cu_seqlens, *(saved if backward == "triton" else ()))
        return y

    @staticmethod
    def backward(ctx, dy):
        x, dt, A, B, C, D, dt_bias, cu, *saved = ctx.saved_tensors
        chunk_size, dt_softplus, dt_limit, backward = ctx.cfg
        inputs = [x, dt, A, B, C, D, dt_bias]
        wanted = [t is not None and need for t, need in zip(inputs, ctx.needs_input_grad[:7])]
        tail = (None,) * 5
        if backward == "triton":
            grads = ssd_backward_triton(dy, x, dt, A, B, C, D, dt_bias, tuple(saved), chunk_size, dt_softplus,
                                        dt_limit)
            return (*[gr if w else None for gr, w in zip(grads, wanted)], *tail)
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(w) if t is not None else None for t, w in zip(inputs, wanted)]
            y = ssd_chunked_varlen(*leaves, cu, chunk_size, dt_softplus, dt_limit)
            diff = [t for t, w in zip(leaves, wanted) if w]
            grads = iter(torch.autograd.grad(y, diff, dy) if diff else ())
        return (*[next(grads) if w else None for w in wanted], *tail)


def ssd_triton_varlen(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                      dt_bias: Tensor | None, cu_seqlens: Tensor, chunk_size: int = 64, dt_softplus: bool = True,
                      dt_limit: tuple[float, float] = NO_DT_LIMIT, backward: str = BACKWARDS[0]) -> Tensor:
    """Varlen SSD scan in Triton: same signature and semantics as
    :func:`rerankers.kernels.ssd.chunked.ssd_chunked_varlen` (chunk_size rounded down to a power of two,
    :func:`triton_chunk_size`); ``backward``: one of :data:`BACKWARDS` (see the module). CUDA tensors,
    or CPU ones under ``TRITON_INTERPRET=1``. fp64 inputs run the chunked form (fp64 is a test precision;
    the kernels compute in fp32).
    """
    T, H, P = x.shape
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
    check_cu_seqlens(cu_seqlens, T, check_values=not x.is_cuda)
    triton_chunk_size(chunk_size, max(T, 1))  # argument check
    S = cu_seqlens.numel() - 1
    if T == 0 or S == 0:
        return x.new_zeros((T, H, P))
    if any(t is not None and t.dtype == torch.float64 for t in (x, dt, A, B, C, D, dt_bias)):
        return ssd_chunked_varlen(x, dt, A, B, C, D, dt_bias, cu_seqlens, chunk_size, dt_softplus, dt_limit)
    check_device(x, "SSD scan")
    x, B, C = row_major(x), row_major(B), row_major(C)
    return _SSDTriton.apply(x, dt, A.contiguous(), B, C, D.contiguous() if D is not None else None,
                            dt_bias.contiguous() if dt_bias is not None else None, cu_seqlens, chunk_size,
                            dt_softplus, tuple(dt_limit), backward)

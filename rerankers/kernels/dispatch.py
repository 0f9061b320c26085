"""Public entry points: one function per kernel, dispatching to Triton, the reference or mamba-ssm.

backend:
    None / "auto"   Triton on CUDA tensors, the pure-PyTorch reference elsewhere (CPU).
    "triton"        the Triton kernels (also on CPU tensors under ``TRITON_INTERPRET=1``: tests).
    "reference"     the pure-PyTorch per-sequence reference.
    "mamba_ssm"     mamba-ssm / causal-conv1d CUDA kernels on a padded batch (comparison only);
                    needs the ``mamba-ssm`` extra (``pip install -e '.[mamba-ssm]'`` in the project folder).

Torch only: the Triton modules are imported where the Triton backend is used.
"""
from __future__ import annotations

import torch
from torch import Tensor

from rerankers.errors import KernelBackendError

from .add_rmsnorm.reference import add_rmsnorm_ref, check_add_rmsnorm_shapes
from .causal_conv1d.reference import causal_conv1d_ref_varlen, check_activation
from .selective_scan.reference import selective_scan_ref_varlen
from .ssd.chunked import ssd_chunked_varlen
from .ssd.reference import NO_DT_LIMIT, ssd_ref_varlen
from .varlen import check_cu_seqlens

BACKENDS = ("auto", "triton", "reference", "mamba_ssm")
# "auto": the Triton SSD (rerankers/kernels/ssd/op.py) for bf16/fp16 CUDA tensors in eager mode, since its H200
# timing (BENCHMARKS.md, fourth session); the chunked PyTorch form otherwise: on the CPU, in fp32 (the Triton fp32
# path spills: it is for checks) and under torch.compile, which the Triton SSD (an autograd.Function with host-side
# launch logic, not a custom op) is not tested under
SSD_BACKENDS = ("auto", "chunked", "reference", "triton")


def _resolve(backend: str | None, device_is_cuda: bool) -> str:
    b = "auto" if backend is None else backend
    if b not in BACKENDS:
        raise KernelBackendError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if b == "auto":
        return "triton" if device_is_cuda else "reference"
    return b


def _check_scan_shapes(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                       z: Tensor | None, delta_bias: Tensor | None, cu_seqlens: Tensor) -> None:
    if u.dim() != 2:
        raise ValueError(f"u must be (T, D), got shape {tuple(u.shape)}")
    T, Dm = u.shape
    if A.dim() != 2 or A.shape[0] != Dm:
        raise ValueError(f"A must be (D={Dm}, N), got shape {tuple(A.shape)}")
    N = A.shape[1]
    for name, t, shape in (("delta", delta, (T, Dm)), ("z", z, (T, Dm)), ("B", B, (T, N)), ("C", C, (T, N)),
                           ("D", D, (Dm,)), ("delta_bias", delta_bias, (Dm,))):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    check_cu_seqlens(cu_seqlens, T, check_values=False)


def _check_conv_shapes(x: Tensor, weight: Tensor, bias: Tensor | None, cu_seqlens: Tensor,
                       activation: str | None) -> Tensor:
    """Returns the weight as (D, W)."""
    if x.dim() != 2:
        raise ValueError(f"x must be (T, D), got shape {tuple(x.shape)}")
    if weight.dim() == 3 and weight.shape[1] == 1:  # nn.Conv1d's (D, 1, W)
        weight = weight[:, 0]
    if weight.dim() != 2 or weight.shape[0] != x.shape[1] or not 1 <= weight.shape[1] <= 4:
        raise ValueError(f"weight must be (D={x.shape[1]}, W) with W <= 4, got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (x.shape[1],):
        raise ValueError(f"bias must be ({x.shape[1]},), got {tuple(bias.shape)}")
    check_activation(activation)
    check_cu_seqlens(cu_seqlens, x.shape[0], check_values=False)
    return weight


def selective_scan_varlen(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                          z: Tensor | None, delta_bias: Tensor | None, cu_seqlens: Tensor,
                          delta_softplus: bool = True, backend: str | None = None) -> Tensor:
    """Varlen Mamba-1 selective scan over packed sequences (each starts from a zero state).

    u, delta, z: (T, D); B, C: (T, N) in any float dtype; A: (D, N), negative (Mamba's -exp(A_log)); D,
    delta_bias: (D,); cu_seqlens: (S+1,) int32. z, D and delta_bias may be None. Returns y: (T, D) in u's dtype;
    differentiable in every floating input. See :mod:`rerankers.kernels.selective_scan.reference` for the exact
    semantics. The Triton backend zeroes the state at a sequence start through its decay
    (:data:`rerankers.kernels.selective_scan.forward.RESET_DT`): it needs A < 0, and a non-finite state (an
    overflow) would reach the later sequences of its window instead of stopping at its own end.
    """
    _check_scan_shapes(u, delta, A, B, C, D, z, delta_bias, cu_seqlens)
    cu_seqlens = cu_seqlens.to(device=u.device)
    b = _resolve(backend, u.is_cuda)
    if b == "reference":
        return selective_scan_ref_varlen(u, delta, A, B, C, D, z, delta_bias, cu_seqlens, delta_softplus)
    if b == "triton":
        from .selective_scan.op import selective_scan_triton
        return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, cu_seqlens, delta_softplus)
    from .mamba_ssm_backend import selective_scan_mamba_ssm
    return selective_scan_mamba_ssm(u, delta, A, B, C, D, z, delta_bias, cu_seqlens, delta_softplus)


def causal_conv1d_varlen(x: Tensor, weight: Tensor, bias: Tensor | None, cu_seqlens: Tensor,
                         activation: str | None = "silu", backend: str | None = None) -> Tensor:
    """Varlen depthwise causal conv1d (+ SiLU) over packed sequences; no tap crosses a boundary.

    x: (T, D); weight: (D, W) with W in 2..4 (1 is accepted too; nn.Conv1d's (D, 1, W) as well);
    bias: (D,) or None; activation: "silu" or None; cu_seqlens: (S+1,) int32. Returns (T, D) in
    x's dtype. See :mod:`rerankers.kernels.causal_conv1d.reference` for the exact semantics.
    """
    weight = _check_conv_shapes(x, weight, bias, cu_seqlens, activation)
    cu_seqlens = cu_seqlens.to(device=x.device)
    b = _resolve(backend, x.is_cuda)
    if b == "reference":
        return causal_conv1d_ref_varlen(x, weight, bias, cu_seqlens, activation)
    if b == "triton":
        from .causal_conv1d.op import causal_conv1d_triton
        return causal_conv1d_triton(x, weight, bias, cu_seqlens, activation)
    from .mamba_ssm_backend import causal_conv1d_mamba_ssm
    return causal_conv1d_mamba_ssm(x, weight, bias, cu_seqlens, activation)


def _check_ssd_shapes(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                      dt_bias: Tensor | None, cu_seqlens: Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"x must be (T, H, P), got shape {tuple(x.shape)}")
    T, H, _ = x.shape
    if B.dim() != 3 or B.shape[0] != T or B.shape[1] < 1 or H % B.shape[1]:
        raise ValueError(f"B must be (T={T}, G, N) with G dividing H={H}, got shape {tuple(B.shape)}")
    for name, t, shape in (("dt", dt, (T, H)), ("A", A, (H,)), ("C", C, tuple(B.shape)), ("D", D, (H,)),
                           ("dt_bias", dt_bias, (H,))):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    check_cu_seqlens(cu_seqlens, T, check_values=False)


def ssd_varlen(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, dt_bias: Tensor | None,
               cu_seqlens: Tensor, chunk_size: int = 256, dt_softplus: bool = True,
               dt_limit: tuple[float, float] = NO_DT_LIMIT, backend: str | None = None) -> Tensor:
    """Varlen SSD scan (Mamba-2) over packed sequences (each starts from a zero state).

    x: (T, H, P); dt: (T, H); A: (H,); B, C: (T, G, N), head h reading group h // (H // G);
    D, dt_bias: (H,) or None; cu_seqlens: (S+1,) int32; chunk_size: the chunked form's Q (the
    result does not depend on it beyond rounding). backend: None / "auto" ("triton" for 16-bit CUDA tensors
    outside torch.compile, "chunked" otherwise: the Triton fp32 path, IEEE fp32 dots, is for checks),
    "chunked" (the chunked PyTorch form, CPU and GPU), "reference" (the recurrent oracle) or "triton"
    (Triton forward and backward, chunk_size rounded down to a power of two and at most 64; CUDA tensors,
    or CPU ones under TRITON_INTERPRET=1: :mod:`rerankers.kernels.ssd.op`). Returns y: (T, H, P) in x's
    dtype; differentiable in every floating input. Semantics: :mod:`rerankers.kernels.ssd.reference`.
    """
    _check_ssd_shapes(x, dt, A, B, C, D, dt_bias, cu_seqlens)
    b = "auto" if backend is None else backend
    if b not in SSD_BACKENDS:
        raise KernelBackendError(f"SSD backend must be one of {SSD_BACKENDS}, got {backend!r}")
    cu_seqlens = cu_seqlens.to(device=x.device)
    if b == "reference":
        return ssd_ref_varlen(x, dt, A, B, C, D, dt_bias, cu_seqlens, dt_softplus, dt_limit)
    if b == "triton" or (b == "auto" and x.is_cuda and x.dtype in (torch.bfloat16, torch.float16)
                         and not torch.compiler.is_compiling()):
        from .ssd.op import ssd_triton_varlen
        return ssd_triton_varlen(x, dt, A, B, C, D, dt_bias, cu_seqlens, chunk_size, dt_softplus, dt_limit)
    return ssd_chunked_varlen(x, dt, A, B, C, D, dt_bias, cu_seqlens, chunk_size, dt_softplus, dt_limit)


def add_rmsnorm(hidden: Tensor, residual: Tensor | None, weight: Tensor, eps: float, residual_in_fp32: bool = False,
                out_dtype: torch.dtype | None = None, keep_residual: bool = True,
                backend: str | None = None) -> tuple[Tensor, Tensor | None]:
    """Fused residual add + RMSNorm, the pre-norm step of a Mamba block.

    hidden: (T, H); residual: (T, H) or None (a first layer); weight: (H,). residual_out = hidden
    (+ residual) in the sum's dtype, at least fp32 if ``residual_in_fp32``; out = RMSNorm(residual_out)
    * weight in ``out_dtype`` (None: weight's dtype; under autocast, the autocast dtype saves the
    next matmul's cast). Returns (out, residual_out, or None unless ``keep_residual``: the final
    norm, whose Triton path then neither writes nor keeps it). Differentiable in hidden, residual,
    weight, with a gradient into residual_out as well. backend: as the other kernels ("mamba_ssm",
    whose comparison path covers the scan and the conv, runs this step as "auto"). Semantics:
    :mod:`rerankers.kernels.add_rmsnorm.reference`.
    """
    check_add_rmsnorm_shapes(hidden, residual, weight)
    b = _resolve(None if backend == "mamba_ssm" else backend, hidden.is_cuda)
    if b == "triton":
        from .add_rmsnorm.op import add_rmsnorm_triton
        return add_rmsnorm_triton(hidden, residual, weight, eps, residual_in_fp32, out_dtype, keep_residual)
    return add_rmsnorm_ref(hidden, residual, weight, eps, residual_in_fp32, out_dtype, keep_residual)

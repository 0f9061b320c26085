"""Varlen (packed) Mamba kernels: selective scan and causal conv1d (Mamba-1), SSD scan (Mamba-2).

Triton kernels + autograd on CUDA (torch custom ops for torch.compile, called directly in eager
mode), pure-PyTorch references on the CPU, and an optional mamba-ssm comparison path. See
:func:`selective_scan_varlen`, :func:`causal_conv1d_varlen`.

    dispatch.py          the public functions: backend choice and argument checks
    varlen.py            the cu_seqlens contract and what is derived from it
    selective_scan/      forward.py, backward.py (Triton kernels), op.py (ScanConfig, launchers,
                         custom ops + autograd, selective_scan_triton), reference.py
    causal_conv1d/       the same for the conv (ConvConfig, causal_conv1d_triton)
    add_rmsnorm/         the fused residual add + RMSNorm of the blocks (NormConfig, add_rmsnorm_triton)
    ssd/                 Mamba-2's scan: reference.py (recurrent oracle), chunked.py (matmul form, PyTorch),
                         forward.py / backward.py / op.py (Triton: "auto" on CUDA)
    triton_utils.py      the Triton helpers both ops share
    custom_op.py         custom ops with one autograd formula, and the eager path around the dispatch
    precision.py         the references' compute dtype
    mamba_ssm_backend.py the optional mamba-ssm comparison path

Importing this package does not import triton (an optional extra for CPU users): the Triton
modules are imported where the Triton backend runs.
"""
from rerankers.errors import KernelBackendError

from .add_rmsnorm.reference import add_rmsnorm_ref
from .causal_conv1d.reference import causal_conv1d_ref_varlen
from .dispatch import BACKENDS, SSD_BACKENDS, add_rmsnorm, causal_conv1d_varlen, selective_scan_varlen, ssd_varlen
from .selective_scan.reference import selective_scan_ref_varlen
from .ssd import ssd_chunked_varlen, ssd_ref_varlen

__all__ = [
           "BACKENDS",
           "KernelBackendError",
           "add_rmsnorm",
           "add_rmsnorm_ref",
           "causal_conv1d_ref_varlen",
           "causal_conv1d_varlen",
           "selective_scan_ref_varlen",
           "selective_scan_varlen",
           "SSD_BACKENDS",
           "ssd_chunked_varlen",
           "ssd_ref_varlen",
           "ssd_varlen",
]

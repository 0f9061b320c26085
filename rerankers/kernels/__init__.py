"""Varlen (packed) Mamba-1 kernels: selective scan and causal conv1d.

Triton kernels + autograd on CUDA (torch custom ops for torch.compile, called directly in eager
mode), pure-PyTorch references on the CPU, and an optional mamba-ssm comparison path. See
:func:`selective_scan_varlen`, :func:`causal_conv1d_varlen`.

    dispatch.py          the public functions: backend choice and argument checks
    varlen.py            the cu_seqlens contract and what is derived from it
    selective_scan/      forward.py, backward.py (Triton kernels), op.py (ScanConfig, launchers,
                         custom ops + autograd, selective_scan_triton), reference.py
    causal_conv1d/       the same for the conv (ConvConfig, causal_conv1d_triton)
    triton_utils.py      the Triton helpers both ops share
    custom_op.py         custom ops with one autograd formula, and the eager path around the dispatch
    precision.py         the references' compute dtype
    mamba_ssm_backend.py the optional mamba-ssm comparison path

Importing this package does not import triton (an optional extra for CPU users): the Triton
modules are imported where the Triton backend runs.
"""
from rerankers.errors import KernelBackendError

from .causal_conv1d.reference import causal_conv1d_ref_varlen
from .dispatch import BACKENDS, causal_conv1d_varlen, selective_scan_varlen
from .selective_scan.reference import selective_scan_ref_varlen

__all__ = [
           "BACKENDS",
           "KernelBackendError",
           "causal_conv1d_ref_varlen",
           "causal_conv1d_varlen",
           "selective_scan_ref_varlen",
           "selective_scan_varlen",
]

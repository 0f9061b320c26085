"""Varlen (packed) Mamba-1 kernels: selective scan and causal conv1d.

Triton kernels + autograd on CUDA (torch custom ops for torch.compile, called directly in eager
mode), pure-PyTorch references on the CPU, and an optional mamba-ssm comparison path. See
:func:`selective_scan_varlen`, :func:`causal_conv1d_varlen`.
"""
from .api import (
           BACKENDS,
           KernelBackendError,
           causal_conv1d_varlen,
           selective_scan_varlen,
)
from . import eager
from .reference import causal_conv1d_ref_varlen, selective_scan_ref_varlen

__all__ = [
           "BACKENDS",
           "KernelBackendError",
           "causal_conv1d_ref_varlen",
           "causal_conv1d_varlen",
           "selective_scan_ref_varlen",
           "selective_scan_varlen",
]

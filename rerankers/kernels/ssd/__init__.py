"""Varlen SSD (Mamba-2's state space scan) over packed sequences; torch only.

    reference.py    the recurrent per-sequence reference (the oracle; fp32 or fp64), ``ssd_ref_varlen``
    chunked.py      the chunked matmul form over the packed stream with per-token sequence masks,
                    ``ssd_chunked_varlen``: the CPU path and, for now, the GPU path

The public entry point, with its argument checks and backend choice, is
:func:`rerankers.kernels.dispatch.ssd_varlen`. No Triton kernel yet: mamba_ssm's Triton SSD
(``mamba_chunk_scan_combined`` with ``seq_idx``) is the candidate to compare against on the GPU
(benchmarks/KERNEL_NOTES.md says how to install it without compiling CUDA).
"""
from .chunked import ssd_chunked_varlen
from .reference import NO_DT_LIMIT, ssd_ref_varlen

__all__ = ["NO_DT_LIMIT", "ssd_chunked_varlen", "ssd_ref_varlen"]

"""Varlen SSD (Mamba-2's state space scan) over packed sequences; torch only.

    reference.py    the recurrent per-sequence reference (the oracle; fp32 or fp64), ``ssd_ref_varlen``
    chunked.py      the chunked matmul form over the packed stream with per-token sequence masks,
                    ``ssd_chunked_varlen``: the CPU path
    forward.py      Triton kernels of the same chunked form, forward (imports triton)
    backward.py     Triton kernels, backward (imports triton)
    op.py           launchers, the autograd function, ``ssd_triton_varlen`` (imports triton): the
                    default GPU path of ``ssd_varlen`` since its H200 timing (KERNEL_NOTES.md)

The public entry point, with its argument checks and backend choice, is
:func:`rerankers.kernels.dispatch.ssd_varlen`. mamba_ssm's Triton SSD (``mamba_chunk_scan_combined``
with ``seq_idx``) is the one to compare against on the GPU (benchmarks/KERNEL_NOTES.md says how to
install it without compiling CUDA; benchmarks/bench_ssd_triton.py times both). Only the torch
modules are imported here.
"""
from .chunked import ssd_chunked_varlen
from .reference import NO_DT_LIMIT, ssd_ref_varlen

__all__ = ["NO_DT_LIMIT", "ssd_chunked_varlen", "ssd_ref_varlen"]

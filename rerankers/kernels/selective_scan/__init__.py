"""The varlen Mamba-1 selective scan: forward.py and backward.py (Triton kernels), op.py (ScanConfig,
launchers, custom ops + autograd, :func:`~.op.selective_scan_triton`), reference.py (pure PyTorch).

Nothing is imported here, so that the reference is importable without triton.
"""

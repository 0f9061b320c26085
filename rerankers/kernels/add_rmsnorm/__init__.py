"""Fused residual add + RMSNorm (the pre-norm step of a Mamba block): forward.py and backward.py (Triton
kernels), op.py (NormConfig, launchers, custom ops + autograd, :func:`~.op.add_rmsnorm_triton`),
reference.py (pure PyTorch: the semantics, the CPU path and the test oracle).

Nothing is imported here, so that the reference is importable without triton.
"""

"""The varlen depthwise causal conv1d: forward.py and backward.py (Triton kernels), op.py (ConvConfig,
launchers, custom ops + autograd, :func:`~.op.causal_conv1d_triton`), reference.py (pure PyTorch).

Nothing is imported here, so that the reference is importable without triton.
"""

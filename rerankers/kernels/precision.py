"""Dtypes: the precision of the pure-PyTorch references (fp32, or fp64 where any input is fp64), and a cast
that costs nothing where none is needed (torch only)."""
from __future__ import annotations

import torch
from torch import Tensor


def reference_dtype(*tensors: Tensor | None) -> torch.dtype:
    """fp64 if any of ``tensors`` (None entries skipped) is fp64, else fp32."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def as_dtype(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x.to(dtype)``, but ``x`` itself without a dispatch where it already has ``dtype`` (host time: a launcher
    returns five gradients a layer, most of them already in their input's dtype)."""
    return x if x.dtype == dtype else x.to(dtype)

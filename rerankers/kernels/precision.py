"""The precision of the pure-PyTorch references (torch only): fp32, or fp64 where any input is fp64."""
from __future__ import annotations

import torch
from torch import Tensor


def reference_dtype(*tensors: Tensor | None) -> torch.dtype:
    """fp64 if any of ``tensors`` (None entries skipped) is fp64, else fp32."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32

"""Copies to the device that never make the host wait.

A plain ``tensor.to("cuda")`` from ordinary (pageable) host memory synchronises the stream: the host
waits until the GPU has run everything queued before it. :func:`to_device` pins the host tensor first
(torch's caching host allocator: no new allocation per call once warm) and copies asynchronously; the
allocator keeps the pinned block until the copy is done.
"""
from __future__ import annotations

import torch
from torch import Tensor


def to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """``t`` on ``device``: asynchronously (through pinned memory) from the CPU to CUDA, else ``t.to(device)``."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)

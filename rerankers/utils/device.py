"""Copies between the host and the device that never make the host wait for the GPU.

A plain ``tensor.to("cuda")`` from ordinary (pageable) host memory synchronises the stream: the host
waits until the GPU has run everything queued before it. :func:`to_device` pins the host tensor first
(torch's caching host allocator: no new allocation per call once warm) and copies asynchronously; the
allocator keeps the pinned block until the copy is done. :class:`ReadBack` is the other way: a few
numbers copied into pinned host memory behind the queued work, waited for only when read.
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


class ReadBack:
    """Numbers on their way to the host: ``values`` (n,) on any device, read as float64 by :meth:`values`."""

    def __init__(self, values: Tensor):
        values = values.detach().to(torch.float64)
        self._event = None
        if values.is_cuda:
            self._host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            self._host.copy_(values, non_blocking=True)  # queued on the values' device's current stream
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(values.device))
        else:
            self._host = values

    def values(self) -> list[float]:
        """The numbers (waits for their copy, not for later work)."""
        if self._event is not None:
            self._event.synchronize()
        return self._host.tolist()

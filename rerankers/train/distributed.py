"""Several processes (``torchrun`` / ``accelerate launch``): the environment, gradient sums, gathers.

Each process draws the same global step from the sampler and keeps its share of the groups; its
loss is scaled by ``1 / groups in the global step``, so the gradients summed over processes
(:func:`sum_gradients`) equal a one-process step of the same global batch. A single process needs
no ``torch.distributed`` at all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as dist

_BUCKET_ELEMENTS = 1 << 24  # gradients summed in flat buckets of up to 16M elements


@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_processes(device: str | None) -> tuple[ProcessInfo, torch.device]:
    """Read RANK/WORLD_SIZE/LOCAL_RANK (set by torchrun and accelerate launch), join the process group
    (NCCL on CUDA, gloo on the CPU) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = ProcessInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device is None:
        dev = torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{info.local_rank}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if info.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return info, dev


def _buckets(grads: list[torch.Tensor]) -> Iterable[list[torch.Tensor]]:
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads:
        if bucket and (g.dtype != bucket[0].dtype or size + g.numel() > _BUCKET_ELEMENTS):
            yield bucket
            bucket, size = [], 0
        bucket.append(g)
        size += g.numel()
    if bucket:
        yield bucket


def sum_gradients(params: Iterable[torch.nn.Parameter], info: ProcessInfo) -> None:
    """All-reduce (sum) the gradients of ``params`` over the processes, in flat buckets.

    Every process must hold a gradient for the same parameters: the loop sets missing ones to zero.
    """
    if not info.distributed:
        return
    for bucket in _buckets([p.grad for p in params if p.grad is not None]):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def sum_tensor(t: torch.Tensor, info: ProcessInfo) -> torch.Tensor:
    """``t`` summed over the processes, in place (a step's loss and counts; no host readback: NCCL queues the
    sum on the stream)."""
    if info.distributed:
        dist.all_reduce(t)
    return t


def gather_objects(obj: Any, info: ProcessInfo) -> list[Any]:
    """Every process's ``obj``, in rank order (on every process)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: ProcessInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_object(obj: Any, info: ProcessInfo) -> Any:
    """The main process's ``obj`` on every process."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(info: ProcessInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()

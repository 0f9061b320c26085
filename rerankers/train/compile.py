"""The training forward through ``torch.compile`` (``rerank train --compile``, ``rerank bench train --compile``).

At small steps (64 pairs) a training step is launch-bound: the host's per-op cost dominates. Compiling
the model's forward (and, through AOTAutograd, its backward) fuses the small ops; ``reduce-overhead``
also captures them as CUDA graphs, which replay only for a shape seen before: give every step one
shape with ``--static-tokens`` (:func:`rerankers.data.packing.pad_to_static`). Our Triton kernels
are torch custom ops (:mod:`rerankers.kernels.custom_op`), so the compiler traces through them;
BERT's packed attention is torch's ``varlen_attn`` / flash-attn's custom op on the GPU.

Only the training step's forward is compiled: the model object itself (evaluation, saving,
checkpoints) stays eager and keeps its parameter names.

``cuda-graphs`` needs no compiler: the eager forward and backward of one fixed-shape micro-batch are
captured as two CUDA graphs (``torch.cuda.make_graphed_callables``) at the first call and replayed for
every later one (:class:`GraphedForward`); the loss, the optimizer and the clipping stay eager (a few
launches). What it removes is the host's per-op cost of the model, which sets the pace of small steps
(mamba-130m at 64 pairs: ~83 ms of host for ~25 ms of GPU work on an H200).
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor

from rerankers.data.packing import PackedBatch
from rerankers.errors import ModelConfigError, one_line
from rerankers.models.graphed import TensorsForward
from rerankers.train.config import COMPILE_MODES

logger = logging.getLogger(__name__)


def training_forward(model: torch.nn.Module, mode: str) -> Callable[[PackedBatch], Tensor]:
    """The callable a training step scores with: ``model`` itself for ``mode`` "off", a
    :class:`GraphedForward` for "cuda-graphs", else ``torch.compile(model, mode=mode)`` (the same parameters;
    compiled on its first call).

    No ``torch.compiler.cudagraph_mark_step_begin()`` between calls: that would declare the previous
    replay's outputs dead, and with several micro-batches per step a parameter's ``.grad`` may be one of
    them (the backward graph's output, kept by autograd's accumulation) until the optimizer step; CUDA-graph
    trees see by themselves which outputs are still alive and never overwrite those.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if mode == "cuda-graphs":
        return GraphedForward(model)
    return model if mode == "off" else torch.compile(model, mode=mode)


class GraphedForward:
    """The model's forward and backward as CUDA graphs for fixed-shape batches (``--static-tokens``).

    The first call with a shape captures them on that batch (three warm-up passes on a side stream first: the
    Triton kernels compile there), under the caller's autocast (its weight-cast cache off, as graphs need);
    every later call of that shape copies its batch into the captured inputs and replays, and its backward
    replays the captured backward. A training run has one shape; each new one is captured once more (its own
    memory pool; :meth:`clear` frees them all). Batches must come from
    :func:`rerankers.data.packing.pad_to_static`. Every call first allocates the ``.grad`` a parameter lacks
    (zeros), so that autograd accumulates into it in place: the graph hands out its own static gradient
    buffers, which autograd would otherwise adopt as ``.grad`` and the next replay overwrite. Callers zero the
    gradients in place (``zero_grad(set_to_none=False)``) so that these allocations happen once, not every step.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._graphs: dict[tuple, Callable[..., Tensor]] = {}

    def clear(self) -> None:
        self._graphs.clear()

    def __call__(self, batch: PackedBatch) -> Tensor:
        device = batch.input_ids.device
        if device.type != "cuda":
            raise ValueError(f"--compile cuda-graphs: CUDA graphs need a CUDA device, the batch is on {device}")
        if batch.real_sequences is None:
            raise ValueError("--compile cuda-graphs: every micro-batch must have one fixed shape (--static-tokens)")
        args = tuple(t for t in (batch.input_ids, batch.cu_seqlens, batch.position_ids, batch.token_type_ids)
                     if t is not None)
        for p in self.model.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
        shape = (batch.num_tokens, batch.num_sequences, batch.max_seqlen, len(args))
        enabled = torch.is_autocast_enabled("cuda")
        with torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=enabled, cache_enabled=False):
            graphed = self._graphs.get(shape)
            if graphed is None:
                logger.info("cuda-graphs: capturing the forward and backward of %d tokens in %d slots", shape[0],
                            shape[1])
                try:
                    graphed = torch.cuda.make_graphed_callables(TensorsForward(self.model, batch.max_seqlen), args,
                                                                allow_unused_input=True)
                except RuntimeError as e:  # an op that reads the device from the host, or copies from pageable memory
                    raise ModelConfigError(f"--compile cuda-graphs: the training forward of this "
                                           f"{type(self.model).__name__} cannot be captured as a CUDA graph "
                                           f"({one_line(e, 300)}); train without --compile cuda-graphs") from e
                self._graphs[shape] = graphed
            return graphed(*args)

"""The training forward through ``torch.compile`` (``rerank train --compile``, ``rerank bench train --compile``).

At small steps (64 pairs) a training step is launch-bound: the host's per-op cost dominates. Compiling
the model's forward (and, through AOTAutograd, its backward) fuses the small ops; ``reduce-overhead``
also captures them as CUDA graphs, which replay only for a shape seen before: give every step one
shape with ``--static-tokens`` (:func:`rerankers.data.packing.pad_to_static`). Our Triton kernels
are torch custom ops (:mod:`rerankers.kernels.custom_op`), so the compiler traces through them;
BERT's packed attention is torch's ``varlen_attn`` / flash-attn's custom op on the GPU.

Only the training step's forward is compiled: the model object itself (evaluation, saving,
checkpoints) stays eager and keeps its parameter names.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from rerankers.data.packing import PackedBatch
from rerankers.train.config import COMPILE_MODES


def training_forward(model: torch.nn.Module, mode: str) -> Callable[[PackedBatch], Tensor]:
    """The callable a training step scores with: ``model`` itself for ``mode`` "off", else
    ``torch.compile(model, mode=mode)`` (the same parameters; compiled on its first call).

    No ``torch.compiler.cudagraph_mark_step_begin()`` between calls: that would declare the previous
    replay's outputs dead, and with several micro-batches per step a parameter's ``.grad`` may be one of
    them (the backward graph's output, kept by autograd's accumulation) until the optimizer step; CUDA-graph
    trees see by themselves which outputs are still alive and never overwrite those.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return model if mode == "off" else torch.compile(model, mode=mode)

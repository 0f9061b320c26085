"""Scoring through CUDA graphs: ``Reranker(..., cuda_graphs=True)``, ``rerank bench infer --modes graphed``.

A packed batch of a few thousand tokens is host-bound in eager PyTorch: Mamba's forward issues ~25 small
launches a layer, and on an H200 packed inference of mamba-130m kept the GPU 65% busy (KERNEL_NOTES.md, ninth
session). A CUDA graph replays a forward's launches in one call. It needs fixed shapes, so each batch is padded
(:func:`rerankers.data.packing.pad_to_static`: padding pieces after the real sequences, which no real sequence
sees) to a bucket: tokens rounded up to one of eight steps per power of two (at most 12.5% padding; at least
:data:`MIN_TOKENS`), slots for a power of two of real sequences plus the padding pieces. The Reranker fills its
batches to one token under its budget, so a full batch pads to the budget itself (16,384 by default). A bucket's
graph is captured at its first batch and replayed for every later one; all graphs share one memory pool (each
replay's scores are copied out before the next runs).

Training has its own capture of forward and backward (:class:`rerankers.train.compile.GraphedForward`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from rerankers.data.packing import PackedBatch, StaticShape, pad_to_static
from rerankers.errors import ModelConfigError, one_line
from rerankers.kernels.triton_utils import next_pow2

logger = logging.getLogger(__name__)

#: the smallest token bucket (tiny batches share one graph)
MIN_TOKENS = 256
#: graphs kept per scorer; batches of further shapes run eagerly (said once)
MAX_GRAPHS = 32


def bucket_shape(tokens: int, sequences: int, max_seqlen: int, pad_id: int = 0) -> StaticShape:
    """The fixed shape a batch of ``sequences`` real sequences and ``tokens`` real tokens is padded to: at
    least one padding token, tokens the next of eight steps per power of two (k * 2**(e-3), k = 8..15, so at most
    12.5% padding) and at least :data:`MIN_TOKENS`, slots for next_pow2(sequences) real sequences and the
    padding; ``max_seqlen`` bounds every sequence (the template's max_length, or the batch's longest where that
    is longer)."""
    if tokens < 1 or sequences < 1:
        raise ValueError(f"bucket_shape: need a non-empty batch, got {sequences} sequences of {tokens} tokens")
    need = max(MIN_TOKENS, tokens + 1)
    step = max(1, next_pow2(need) // 16)  # next_pow2(need) / 2 < need <= next_pow2(need): steps of 1/8 of the octave
    return StaticShape.for_budget(-(-need // step) * step, next_pow2(sequences), max_seqlen, pad_id)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[Tensor, ...]   # the captured batch's tensors: each replay's batch is copied into them
    scores: Tensor               # (slots,) the captured forward's output


class GraphedScorer:
    """``model``'s forward (no gradients) over packed batches, replayed from CUDA graphs by shape bucket.

    Call it as the model: ``scorer(batch) -> (S,)`` scores of the batch's S real sequences (a new tensor). The
    caller's autocast applies (captured with its weight-cast cache off, as graphs need), and is part of the
    bucket's key. ``max_seqlen``: the bound on sequence lengths the padding uses (the template's max_length).
    Batches must be packed, without padding of their own (``real_sequences`` None)."""

    def __init__(self, model: torch.nn.Module, max_seqlen: int, pad_id: int = 0, max_graphs: int = MAX_GRAPHS):
        self.model, self.max_seqlen, self.pad_id, self.max_graphs = model, int(max_seqlen), int(pad_id), max_graphs
        self._graphs: dict[tuple, _Graph] = {}
        self._pool = None
        self._said_full = False

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        """Free every captured graph and the shared pool."""
        self._graphs.clear()
        self._pool = None

    def _forward(self, args: tuple[Tensor, ...], shape: StaticShape) -> Tensor:
        ids, cu, pos, *tt = args
        return self.model(PackedBatch(input_ids=ids, cu_seqlens=cu, max_seqlen=shape.max_seqlen, position_ids=pos,
                                      token_type_ids=tt[0] if tt else None))

    def _capture(self, args: tuple[Tensor, ...], shape: StaticShape) -> _Graph:
        inputs = tuple(a.clone() for a in args)
        side = torch.cuda.Stream(device=args[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: Triton compiles, cuBLAS picks its kernels here
            for _ in range(2):
                self._forward(inputs, shape)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        try:
            with torch.cuda.graph(graph, pool=self._pool):
                scores = self._forward(inputs, shape)
        except RuntimeError as e:  # an op that reads a device value on the host, or copies from pageable memory
            raise ModelConfigError(f"cuda_graphs: the forward of this {type(self.model).__name__} cannot be "
                                   f"captured as a CUDA graph ({one_line(e, 300)}); score without cuda_graphs"
                                   ) from e
        return _Graph(graph, inputs, scores)

    @torch.no_grad()
    def __call__(self, batch: PackedBatch) -> Tensor:
        """PackedBatch (S sequences, T tokens) on a CUDA device -> scores (S,)."""
        device = batch.input_ids.device
        if device.type != "cuda":
            raise ValueError(f"cuda_graphs: CUDA graphs need a CUDA device, the batch is on {device}")
        if batch.real_sequences is not None:
            raise ValueError("cuda_graphs: the batch is padded already (a fixed-shape training batch)")
        S = batch.num_sequences
        shape = bucket_shape(batch.num_tokens, S, max(self.max_seqlen, batch.max_seqlen), self.pad_id)
        padded = pad_to_static(batch, shape)
        args = tuple(t for t in (padded.input_ids, padded.cu_seqlens, padded.position_ids, padded.token_type_ids)
                     if t is not None)
        enabled = torch.is_autocast_enabled("cuda")
        dtype = torch.get_autocast_dtype("cuda")
        key = (shape, len(args), enabled and dtype, device.index)
        entry = self._graphs.get(key)
        if entry is None and len(self._graphs) >= self.max_graphs:
            if not self._said_full:
                logger.warning("cuda_graphs: %d shapes captured, the limit: batches of other shapes run eagerly",
                               self.max_graphs)
                self._said_full = True
            return self._forward(args, shape)[:S].clone()
        with torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False):
            if entry is None:
                logger.info("cuda_graphs: capturing the forward of %d tokens in %d slots", shape.tokens,
                            shape.sequences)
                entry = self._graphs[key] = self._capture(args, shape)
            else:
                for dst, src in zip(entry.inputs, args):
                    dst.copy_(src, non_blocking=True)
            entry.graph.replay()
        return entry.scores[:S].clone()

"""Scoring through CUDA graphs: ``Reranker(..., cuda_graphs=True)``, ``rerank bench infer --modes graphed``.

A packed batch of a few thousand tokens is host-bound in eager PyTorch: Mamba's forward issues ~25 small
launches a layer, and on an H200 packed inference of mamba-130m kept the GPU 65% busy (KERNEL_NOTES.md, ninth
session). A CUDA graph replays a forward's launches in one call. It needs fixed shapes, so each batch is padded
(:func:`rerankers.data.packing.pad_to_static`: padding pieces after the real sequences, which no real sequence
sees) to a bucket (:func:`bucket_shape`): tokens rounded up to one of eight steps per power of two (at most 12.5%
padding above 256 tokens, the smallest bucket), slots for a power of two of real sequences plus the padding pieces,
and the sequence bound rounded up to a power of two (at most the template's max_length). The Reranker fills its
batches to one token under its budget, so a full batch pads to the budget where the budget is a bucket (16,384, the
default, is). A bucket's graph is captured at its first batch and replayed for every later one; all graphs share
one memory pool (each replay's scores are copied out before the next runs).

Training has its own capture of forward and backward (:class:`rerankers.train.compile.GraphedForward`).
"""
from __future__ import annotations

import logging
import threading
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
#: backbone kinds with a fixed-shape packed path (empty sequences and padding pieces allowed): not T5 (it pads
#: internally) nor the BiLSTM (pack_padded_sequence refuses an empty sequence)
STATIC_KINDS = ("bert", "mamba", "mamba2", "decoder")
#: kinds whose CUDA attention in fp32 reads sequence bounds on the host (per-sequence SDPA): not capturable
_FP32_HOST_ATTENTION = ("bert", "decoder")


class TensorsForward(torch.nn.Module):
    """``model`` over a packed batch's tensors (what a CUDA-graph capture takes): (input_ids, cu_seqlens,
    position_ids[, token_type_ids]) -> scores (S,), every sequence bounded by ``max_seqlen``."""

    def __init__(self, model: torch.nn.Module, max_seqlen: int):
        super().__init__()
        self.model, self.max_seqlen = model, max_seqlen

    def forward(self, input_ids: Tensor, cu_seqlens: Tensor, position_ids: Tensor, token_type_ids: Tensor | None = None
                ) -> Tensor:
        return self.model(PackedBatch(input_ids=input_ids, cu_seqlens=cu_seqlens, max_seqlen=self.max_seqlen,
                                      position_ids=position_ids, token_type_ids=token_type_ids))


def bucket_shape(tokens: int, sequences: int, max_seqlen: int, pad_id: int = 0, longest: int = 0) -> StaticShape:
    """The fixed shape a batch of ``sequences`` real sequences and ``tokens`` real tokens is padded to: at
    least one padding token, tokens the next of eight steps per power of two (k * 2**(e-3), k = 8..15, so at most
    12.5% padding) and at least :data:`MIN_TOKENS`, slots for next_pow2(sequences) real sequences and the
    padding. The sequence bound: next_pow2(``longest``) (the batch's longest sequence), at most ``max_seqlen``
    (the template's max_length) unless the batch's longest is longer; ``longest`` 0: ``max_seqlen``."""
    if tokens < 1 or sequences < 1:
        raise ValueError(f"bucket_shape: need a non-empty batch, got {sequences} sequences of {tokens} tokens")
    need = max(MIN_TOKENS, tokens + 1)
    step = max(1, next_pow2(need) // 16)  # next_pow2(need) / 2 < need <= next_pow2(need): steps of 1/8 of the octave
    bound = max(longest, min(max_seqlen, next_pow2(longest))) if longest else max_seqlen
    return StaticShape.for_budget(-(-need // step) * step, next_pow2(sequences), bound, pad_id)


def check_graphable(model, device: torch.device, autocast: torch.dtype | None, what: str = "cuda_graphs") -> None:
    """Scoring ``model`` from CUDA graphs on ``device`` under ``autocast`` (None: fp32) is possible; else a
    one-line ModelConfigError naming ``what`` (the argument or flag that asked for it)."""
    if device.type != "cuda":
        raise ModelConfigError(f"{what}: CUDA graphs need a CUDA device, got device {str(device)!r}")
    kind = model.backbone_type
    if kind not in STATIC_KINDS:
        raise ModelConfigError(f"{what}: the {kind} backbone has no fixed-shape packed path (supported: "
                               f"{', '.join(STATIC_KINDS)})")
    if autocast is None and kind in _FP32_HOST_ATTENTION:
        raise ModelConfigError(f"{what}: a {kind} backbone in fp32 attends sequence by sequence, reading the bounds "
                               f"on the host, which a CUDA graph cannot capture: use dtype bfloat16 or float16")


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[Tensor, ...]   # the captured batch's tensors: each replay's batch is copied into them
    scores: Tensor               # (slots,) the captured forward's output


class GraphedScorer:
    """``model``'s forward (no gradients) over packed batches, replayed from CUDA graphs by shape bucket.

    Call it as the model: ``scorer(batch) -> (S,)`` scores of the batch's S real sequences (a new tensor), on
    ``model``'s CUDA device. Pad host batches with :meth:`pad` before moving them (no device read then); an
    unpadded batch is padded here. The caller's autocast applies (captured with its weight-cast cache off, as
    graphs need) and is part of the bucket's key. A change of the model's weights' storage (``.to()``, ``.half()``,
    quantization), of its pooling or of train/eval mode drops every graph (captured again as needed); in-place
    weight updates are seen by the graphs. Calls are serialised (one set of captured input buffers).
    ``max_seqlen``: the bound on sequence lengths (the template's max_length)."""

    def __init__(self, model: torch.nn.Module, max_seqlen: int, pad_id: int = 0, max_graphs: int = MAX_GRAPHS):
        self.model, self.max_seqlen, self.pad_id, self.max_graphs = model, int(max_seqlen), int(pad_id), max_graphs
        self._graphs: dict[tuple, _Graph] = {}
        self._pool = None
        self._said_full = False
        self._lock = threading.Lock()
        self._fingerprint = None

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        """Free every captured graph and the shared pool."""
        self._graphs.clear()
        self._pool = None

    def pad(self, batch: PackedBatch) -> PackedBatch:
        """``batch`` padded to its bucket (:func:`bucket_shape`); on the host it reads no device value."""
        if batch.real_sequences is not None:
            raise ValueError("cuda_graphs: the batch is padded already")
        return pad_to_static(batch, bucket_shape(batch.num_tokens, batch.num_sequences, self.max_seqlen,
                                                 self.pad_id, longest=batch.max_seqlen))

    def _model_fingerprint(self) -> tuple:
        params = list(self.model.parameters())
        ends = [params[0], params[-1]] if params else []
        return (tuple((p.data_ptr(), p.dtype, p.device) for p in ends), len(params),
                getattr(self.model, "pooling", None), self.model.training)

    def _capture(self, args: tuple[Tensor, ...], max_seqlen: int, device: torch.device) -> _Graph:
        forward = TensorsForward(self.model, max_seqlen)
        inputs = tuple(a.clone() for a in args)
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up off the capture: Triton compiles, cuBLAS picks its kernels here
            for _ in range(2):
                forward(*inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        try:
            with torch.cuda.graph(graph, pool=self._pool, stream=torch.cuda.Stream(device=device)):
                scores = forward(*inputs)
        except RuntimeError as e:  # an op that reads a device value on the host, or copies from pageable memory
            raise ModelConfigError(f"cuda_graphs: the forward of this {type(self.model).__name__} cannot be "
                                   f"captured as a CUDA graph ({one_line(e, 300)}); score without cuda_graphs"
                                   ) from e
        return _Graph(graph, inputs, scores)

    @torch.no_grad()
    def __call__(self, batch: PackedBatch) -> Tensor:
        """PackedBatch (S sequences, T tokens; padded by :meth:`pad` or not) -> scores (S,) on the model's device."""
        device = next(self.model.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"cuda_graphs: CUDA graphs need a model on a CUDA device, it is on {device}")
        padded = batch if batch.real_sequences is not None else self.pad(batch)
        padded = padded.to(device, non_blocking=True)
        S = padded.num_real_sequences
        args = tuple(t for t in (padded.input_ids, padded.cu_seqlens, padded.position_ids, padded.token_type_ids)
                     if t is not None)
        enabled = torch.is_autocast_enabled("cuda")
        dtype = torch.get_autocast_dtype("cuda")
        key = (padded.num_tokens, padded.num_sequences, padded.max_seqlen, len(args), enabled and dtype)
        with self._lock, torch.cuda.device(device):
            fingerprint = self._model_fingerprint()
            if fingerprint != self._fingerprint:
                if self._graphs:
                    logger.info("cuda_graphs: the model changed (weights moved, pooling or mode): captured again")
                self.clear()
                self._fingerprint = fingerprint
            entry = self._graphs.get(key)
            if entry is None and len(self._graphs) >= self.max_graphs:
                if not self._said_full:
                    logger.warning("cuda_graphs: %d shapes captured, the limit: batches of other shapes run eagerly",
                                   self.max_graphs)
                    self._said_full = True
                return TensorsForward(self.model, padded.max_seqlen)(*args)[:S].clone()
            with torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False):
                if entry is None:
                    logger.info("cuda_graphs: capturing the forward of %d tokens in %d slots", padded.num_tokens,
                                padded.num_sequences)
                    entry = self._graphs[key] = self._capture(args, padded.max_seqlen, device)
                else:
                    for dst, src in zip(entry.inputs, args):
                        dst.copy_(src, non_blocking=True)
                entry.graph.replay()
            return entry.scores[:S].clone()


def graphed_scorer_for(model) -> GraphedScorer:
    """A :class:`GraphedScorer` of ``model`` (a CrossEncoder): its template's bound, its tokenizer's pad id
    (check first with :func:`check_graphable`)."""
    pad_id = getattr(model.tokenizer, "pad_token_id", None)
    return GraphedScorer(model, int(model.template.max_length), 0 if pad_id is None else int(pad_id))

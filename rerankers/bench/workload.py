"""What a benchmark feeds the models: batches of (query, document) pairs as PackedBatch.

Two sources: MS MARCO-shaped random token ids (:func:`msmarco_lengths`: query 5-15 tokens, passage
N(76, 30) clipped to [20, 240], 3 template tokens, at most 256: the shape of the anchors in DESIGN.md),
or real texts from a candidates / run file encoded with the model's own template
(:func:`text_batches`). A batch holds whole groups of ``group_size`` pairs of one query (the training
loss is listwise over a group).

Three ways to run a batch (``mode``): ``packed`` (the varlen contract: no padding), ``padded`` (every
sequence padded to the batch's longest: :func:`padded_view`) and ``single`` (one sequence at a time:
:func:`single_views`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch

from rerankers.data.batching import pack_encoded
from rerankers.data.packing import PackedBatch, pack_token_ids
from rerankers.errors import UsageError
from rerankers.kernels.varlen import cu_seqlens_from_lengths, position_ids_from_cu_seqlens

# static: rerank bench train only (pad_to_static); recompute: train only, packed with Mamba-1's mixers rebuilding
# their conv output and delta in the backward (``rerank train --recompute-mixer``); graphed: infer only, packed
# batches padded to shape buckets and replayed from CUDA graphs (rerankers.models.graphed)
MODES = ("packed", "padded", "static", "single", "recompute", "graphed")


def msmarco_lengths(n: int, gen: torch.Generator, max_length: int = 256) -> list[int]:
    """n pair lengths shaped like MS MARCO (query ~10, passage ~76 tokens, template 3; at most 256, or the
    model's ``max_length`` where smaller)."""
    q = torch.randint(5, 16, (n,), generator=gen)
    p = (torch.randn(n, generator=gen) * 30 + 76).round().clamp(20, 240).long()
    return (q + p + 3).clamp(max=min(256, max_length)).tolist()


def random_batch(lengths: Sequence[int], vocab_size: int, gen: torch.Generator, query_tokens: int = 12,
                 token_types: bool = False) -> PackedBatch:
    """A PackedBatch of random ids (2 .. vocab_size-1: no special ids) with the given lengths; token
    types (where the backbone has them): 0 for the first ``query_tokens`` of each pair, 1 after."""
    seqs = [torch.randint(2, vocab_size, (n,), generator=gen).tolist() for n in lengths]
    tts = [[0] * min(query_tokens, n) + [1] * max(0, n - query_tokens) for n in lengths] if token_types else None
    return pack_token_ids(seqs, tts)


def synthetic_batches(n_pairs: int, n_batches: int, vocab_size: int, seed: int, token_types: bool,
                      max_length: int = 256) -> list[PackedBatch]:
    """``n_batches`` batches of ``n_pairs`` MS MARCO-shaped random pairs (rotated while timing, so that
    no two consecutive calls see the same inputs)."""
    gen = torch.Generator().manual_seed(seed)
    return [random_batch(msmarco_lengths(n_pairs, gen, max_length), vocab_size, gen, token_types=token_types)
            for _ in range(n_batches)]


def model_workload(model) -> dict:
    """The keyword arguments that fit random pairs to ``model``: its vocabulary, whether it takes token
    types, its template's longest sequence."""
    return {"vocab_size": model.backbone.get_input_embeddings().weight.shape[0],
            "token_types": model.backbone_type == "bert", "max_length": int(model.template.max_length)}


@dataclass
class TextPairs:
    """Aligned (query, document) texts of a candidates file, query by query in rank order."""

    queries: list[str]
    docs: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.queries)


def load_text_pairs(path: str | os.PathLike, depth: int, max_pairs: int | None = None) -> TextPairs:
    """The top ``depth`` candidates of every query of a candidates file (JSONL with texts or a TREC run
    with texts beside it; :func:`rerankers.data.inputs.load_rerank_inputs`), at most ``max_pairs``."""
    from rerankers.data.inputs import load_rerank_inputs

    run, queries, docs = load_rerank_inputs(candidates=path, depth=depth)
    qs, ds = [], []
    for qid, ranked in run.items():
        for docid, _ in sorted(ranked.items(), key=lambda kv: -kv[1])[:depth]:
            if docid in docs:
                qs.append(queries[qid])
                ds.append(docs[docid])
    if max_pairs is not None:
        qs, ds = qs[:max_pairs], ds[:max_pairs]
    if not qs:
        raise UsageError(f"--candidates {path}: no (query, document) pair with text")
    return TextPairs(qs, ds, str(path))


def text_batches(model, pairs: TextPairs, n_pairs: int, n_batches: int) -> list[PackedBatch]:
    """``n_batches`` batches of ``n_pairs`` consecutive pairs of ``pairs`` encoded with ``model``'s
    template (wrapping around when the file has fewer pairs)."""
    enc = model.encode(pairs.queries, pairs.docs, warn=False)
    n = len(enc.input_ids)
    return [pack_encoded(enc, [(b * n_pairs + i) % n for i in range(n_pairs)]) for b in range(n_batches)]


def padded_view(batch: PackedBatch, pad_id: int) -> tuple[PackedBatch, torch.Tensor, torch.Tensor]:
    """The batch as padded rows seen by a packed kernel: every sequence extended with ``pad_id`` to the
    batch's longest, so the kernels do the padded batch's work. Returns (batch of S rows of L tokens,
    first real token index (S,), last real token index (S,)) into its T = S * L tokens."""
    S, L = batch.num_sequences, batch.max_seqlen
    ids, _, tt = batch.to_padded(pad_id)
    cu = cu_seqlens_from_lengths([L] * S).to(ids.device)
    rows = torch.arange(S, device=ids.device) * L
    view = PackedBatch(input_ids=ids.reshape(-1), cu_seqlens=cu, max_seqlen=L,
                       position_ids=position_ids_from_cu_seqlens(cu),
                       token_type_ids=None if tt is None else tt.reshape(-1))
    return view, rows, rows + batch.seqlens.to(ids.device) - 1


def single_views(batch: PackedBatch) -> list[PackedBatch]:
    """Each sequence of the batch as a batch of its own (one sequence at a time)."""
    cu = batch.cu_seqlens.tolist()
    out = []
    for s in range(batch.num_sequences):
        a, b = cu[s], cu[s + 1]
        one = cu_seqlens_from_lengths([b - a]).to(batch.input_ids.device)
        out.append(PackedBatch(input_ids=batch.input_ids[a:b], cu_seqlens=one, max_seqlen=b - a,
                               position_ids=position_ids_from_cu_seqlens(one),
                               token_type_ids=None if batch.token_type_ids is None else batch.token_type_ids[a:b]))
    return out


def padded_tokens(batch: PackedBatch) -> int:
    """Tokens a padded batch computes on: S x the longest sequence."""
    return batch.num_sequences * batch.max_seqlen

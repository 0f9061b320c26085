"""Batches by a token budget, and packing encoded pairs into PackedBatch.

For inference, pairs are sorted by length (longest first) so that each batch holds sequences of
similar length (little padding where a backbone pads, steady batch sizes where it packs); the
scores are put back in input order with :func:`restore_order`.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor

from rerankers.data.packing import PackedBatch, pack_token_ids
from rerankers.data.templates import EncodedPairs


def token_budget_batches(lengths: Sequence[int], max_tokens: int, sort: bool = True,
                         padded: bool = False, max_pairs: int | None = None) -> list[list[int]]:
    """Split N sequences into batches of indices whose tokens fit ``max_tokens``.

    lengths:    (N,) sequence lengths
    max_tokens: budget per batch: real tokens (``padded=False``, packed backbones) or
                ``batch size x longest sequence`` (``padded=True``)
    sort:       longest first (inference); False keeps input order
    max_pairs:  optional cap on sequences per batch
    A sequence longer than the budget gets a batch of its own.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort else list(range(len(lengths)))
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_tokens = 0
    cur_max = 0
    for i in order:
        n = int(lengths[i])
        new_max = max(cur_max, n)
        cost = new_max * (len(cur) + 1) if padded else cur_tokens + n
        if cur and (cost > max_tokens or (max_pairs is not None and len(cur) >= max_pairs)):
            batches.append(cur)
            cur, cur_tokens, new_max = [], 0, n
        cur.append(i)
        cur_tokens += n
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


def pack_encoded(enc: EncodedPairs, indices: Sequence[int]) -> PackedBatch:
    """Pack the pairs ``indices`` (in that order) of ``enc`` into one PackedBatch."""
    seqs = [enc.input_ids[i] for i in indices]
    tts = None if enc.token_type_ids is None else [enc.token_type_ids[i] for i in indices]
    return pack_token_ids(seqs, tts)


def iter_packed_batches(enc: EncodedPairs, max_tokens: int, sort: bool = True, padded: bool = False,
                        max_pairs: int | None = None) -> Iterator[tuple[list[int], PackedBatch]]:
    """Yield (indices, PackedBatch) over all pairs of ``enc``, batched by the token budget."""
    for idx in token_budget_batches(enc.lengths, max_tokens, sort=sort, padded=padded, max_pairs=max_pairs):
        yield idx, pack_encoded(enc, idx)


def restore_order(n: int, batches: Sequence[tuple[Sequence[int], Tensor]]) -> list[float]:
    """Scatter per-batch scores back to input order: batches of (indices, scores (len(indices),))."""
    out = torch.empty(n, dtype=torch.float64)
    seen = torch.zeros(n, dtype=torch.bool)
    for idx, scores in batches:
        t = torch.as_tensor(list(idx), dtype=torch.long)
        out[t] = scores.detach().double().cpu()
        seen[t] = True
    if not bool(seen.all()):
        raise RuntimeError(f"restore_order: {int((~seen).sum())} of {n} pairs got no score")
    return out.tolist()

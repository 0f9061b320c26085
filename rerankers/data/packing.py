"""Packed batches: tokens + ``cu_seqlens`` (int32), the varlen contract of :mod:`rerankers.kernels.varlen`.

A :class:`PackedBatch` holds S sequences concatenated without padding into T tokens.
``cu_seqlens[i]:cu_seqlens[i+1]`` are the tokens of sequence i; ``cu_seqlens[0] == 0`` and
``cu_seqlens[-1] == T``. Every backbone accepts it; :meth:`PackedBatch.to_padded` gives the
padded view where a kernel needs padding (CPU references), and tests assert padded == packed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor

from rerankers.kernels import varlen


@dataclass
class PackedBatch:
    """S sequences, T tokens in all.

    input_ids:      (T,) int64, all sequences concatenated
    cu_seqlens:     (S+1,) int32, cumulative lengths, cu_seqlens[0] == 0
    max_seqlen:     int, the longest sequence
    position_ids:   (T,) int64, 0..len-1 within each sequence
    token_type_ids: (T,) int64 or None, where a backbone needs segments (BERT)
    """

    input_ids: Tensor
    cu_seqlens: Tensor
    max_seqlen: int
    position_ids: Tensor
    token_type_ids: Tensor | None = None

    @property
    def num_sequences(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def num_tokens(self) -> int:
        return self.input_ids.numel()

    @property
    def seqlens(self) -> Tensor:
        """(S,) int64 lengths."""
        return varlen.seqlens(self.cu_seqlens)

    @property
    def last_token_index(self) -> Tensor:
        """(S,) int64 index into T of each sequence's last token (causal pooling)."""
        return varlen.last_token_index(self.cu_seqlens)

    @property
    def first_token_index(self) -> Tensor:
        """(S,) int64 index into T of each sequence's first token ([CLS] pooling)."""
        return varlen.first_token_index(self.cu_seqlens)

    def to(self, device: torch.device | str) -> "PackedBatch":
        tt = None if self.token_type_ids is None else self.token_type_ids.to(device)
        return replace(self, input_ids=self.input_ids.to(device), cu_seqlens=self.cu_seqlens.to(device),
                       position_ids=self.position_ids.to(device), token_type_ids=tt)

    def to_padded(self, pad_id: int = 0) -> tuple[Tensor, Tensor, Tensor | None]:
        """Right-padded view: input_ids (S, L), attention_mask (S, L), token_type_ids (S, L) or None."""
        S, L = self.num_sequences, self.max_seqlen
        dev = self.input_ids.device
        lens = self.seqlens.to(dev)
        mask = torch.arange(L, device=dev)[None, :] < lens[:, None]
        ids = torch.full((S, L), pad_id, dtype=self.input_ids.dtype, device=dev)
        ids[mask] = self.input_ids
        tt = None
        if self.token_type_ids is not None:
            tt = torch.zeros((S, L), dtype=self.token_type_ids.dtype, device=dev)
            tt[mask] = self.token_type_ids
        return ids, mask.long(), tt


def pack_token_ids(sequences: Sequence[Sequence[int]],
                   token_types: Sequence[Sequence[int]] | None = None) -> PackedBatch:
    """Pack S lists of token ids (each non-empty) into a PackedBatch."""
    if len(sequences) == 0:
        raise ValueError("pack_token_ids: no sequences to pack")
    lengths = [len(s) for s in sequences]
    if min(lengths) == 0:
        raise ValueError(f"pack_token_ids: sequence {lengths.index(0)} is empty")
    ids = torch.tensor([t for s in sequences for t in s], dtype=torch.long)
    cu = varlen.cu_seqlens_from_lengths(lengths)
    tt = None
    if token_types is not None:
        tt = torch.tensor([t for s in token_types for t in s], dtype=torch.long)
        if tt.numel() != ids.numel():
            raise ValueError("pack_token_ids: token_types do not match the sequences' lengths")
    return PackedBatch(input_ids=ids, cu_seqlens=cu, max_seqlen=max(lengths),
                       position_ids=varlen.position_ids_from_cu_seqlens(cu), token_type_ids=tt)

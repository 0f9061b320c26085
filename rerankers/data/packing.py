"""Packed batches: tokens + ``cu_seqlens`` (int32), the varlen contract of :mod:`rerankers.kernels.varlen`.

A :class:`PackedBatch` holds S sequences concatenated without padding into T tokens.
``cu_seqlens[i]:cu_seqlens[i+1]`` are the tokens of sequence i; ``cu_seqlens[0] == 0`` and
``cu_seqlens[-1] == T``. Every backbone accepts it; :meth:`PackedBatch.to_padded` gives the
padded view where a kernel needs padding (CPU references), and tests assert padded == packed.

Fixed shapes (:func:`pad_to_static`, for torch.compile / CUDA graphs): a batch padded to exactly
``tokens`` tokens and ``sequences`` slots of a :class:`StaticShape`, the real sequences first, then
empty sequences, then padding pieces of pad ids; ``real_sequences`` / ``real_tokens`` say where the
padding starts, so that no loss, pooling or metric reads it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor

from rerankers.kernels import varlen
from rerankers.utils.device import to_device


@dataclass
class PackedBatch:
    """S sequences, T tokens in all.

    input_ids:      (T,) int64, all sequences concatenated
    cu_seqlens:     (S+1,) int32, cumulative lengths, cu_seqlens[0] == 0
    max_seqlen:     int, the longest sequence
    position_ids:   (T,) int64, 0..len-1 within each sequence
    token_type_ids: (T,) int64 or None, where a backbone needs segments (BERT)
    real_sequences: None, or (a fixed-shape batch, :func:`pad_to_static`) the number of real sequences,
                    the first ones; every later slot is padding (max_seqlen is then a bound, not the longest)
    real_tokens:    None, or (a fixed-shape batch) the tokens of the real sequences, the first ones
    """

    input_ids: Tensor
    cu_seqlens: Tensor
    max_seqlen: int
    position_ids: Tensor
    token_type_ids: Tensor | None = None
    real_sequences: int | None = None
    real_tokens: int | None = None

    @property
    def num_sequences(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def num_tokens(self) -> int:
        return self.input_ids.numel()

    @property
    def num_real_sequences(self) -> int:
        """The real sequences (all of them, unless the batch is padded to a fixed shape)."""
        return self.num_sequences if self.real_sequences is None else self.real_sequences

    @property
    def num_real_tokens(self) -> int:
        """The real sequences' tokens (all of them, unless the batch is padded to a fixed shape)."""
        return self.num_tokens if self.real_tokens is None else self.real_tokens

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

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "PackedBatch":
        """The batch on ``device``; ``non_blocking``: from the CPU to CUDA through pinned memory, without
        making the host wait (:func:`rerankers.utils.device.to_device`)."""
        move = (lambda t: to_device(t, device)) if non_blocking else (lambda t: t.to(device))
        tt = None if self.token_type_ids is None else move(self.token_type_ids)
        return replace(self, input_ids=move(self.input_ids), cu_seqlens=move(self.cu_seqlens),
                       position_ids=move(self.position_ids), token_type_ids=tt)

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


#: the longest padding piece: under varlen attention a piece attends to itself, so short pieces keep
#: the padding's attention work small (the real sequences' work is unchanged)
PAD_PIECE_TOKENS = 128


@dataclass(frozen=True)
class StaticShape:
    """The fixed shape of :func:`pad_to_static`: ``tokens`` T, ``sequences`` slots S, ``max_seqlen`` (a
    bound on every sequence, real or padding, e.g. the template's max_length), the padding's token id."""

    tokens: int
    sequences: int
    max_seqlen: int
    pad_id: int = 0

    @property
    def piece_tokens(self) -> int:
        """The longest padding piece."""
        return min(self.max_seqlen, PAD_PIECE_TOKENS)

    @classmethod
    def for_budget(cls, tokens: int, max_pairs: int, max_seqlen: int, pad_id: int = 0) -> "StaticShape":
        """Slots for up to ``max_pairs`` real sequences of < ``tokens`` tokens in all, whatever their lengths:
        the padding (at most tokens - 1) takes at most ceil((tokens - 1) / piece) slots."""
        if tokens < 2 or max_pairs < 1 or max_seqlen < 1:
            raise ValueError(f"StaticShape: need tokens >= 2, max_pairs >= 1, max_seqlen >= 1, got {tokens}, "
                             f"{max_pairs}, {max_seqlen}")
        piece = min(max_seqlen, PAD_PIECE_TOKENS)
        return cls(tokens, min(max_pairs, tokens - 1) + math.ceil((tokens - 1) / piece), max_seqlen, pad_id)

    def fits(self, real_tokens: int, real_sequences: int) -> bool:
        """Whether a batch of that many real tokens and sequences pads to this shape (at least one padding
        token, so that every padding slot's first and last token index lies inside the batch)."""
        pad = self.tokens - real_tokens
        return pad >= 1 and real_sequences + math.ceil(pad / self.piece_tokens) <= self.sequences


def pad_to_static(batch: PackedBatch, shape: StaticShape) -> PackedBatch:
    """``batch`` (S real sequences, T real tokens) padded to exactly ``shape.tokens`` tokens and
    ``shape.sequences`` slots, so that no tensor shape depends on the data.

    Layout: the S real sequences (unchanged, first), then E empty sequences, then P padding pieces of
    ``shape.pad_id`` (each at most ``shape.piece_tokens`` long, positions from 0, token type 0) holding
    the other tokens. Returns a PackedBatch with input_ids / position_ids / token_type_ids (shape.tokens,),
    cu_seqlens (shape.sequences + 1,) int32, max_seqlen = shape.max_seqlen, real_sequences = S and
    real_tokens = T. An empty slot's first token index is the first padding token and its last token
    index the last real token, so pooling every slot stays in bounds; the real sequences' outputs do not
    depend on the padding (every sequence is computed on its own: the backbone's states of the real tokens
    are bit for bit the plain batch's on the CPU, and so are the scores where the head's matmul rounds a
    row independently of the row count, e.g. MKL for groups of 4 or 8 pairs), and a loss over the first S
    scores gives the padding no gradient. ValueError where the batch does not fit (:meth:`StaticShape.fits`)
    or a real sequence is longer than ``shape.max_seqlen``.
    """
    if batch.real_sequences is not None:
        raise ValueError("pad_to_static: the batch is padded already")
    S, T = batch.num_sequences, batch.num_tokens
    if not shape.fits(T, S):
        raise ValueError(f"pad_to_static: {S} sequences of {T} tokens do not fit {shape.tokens} tokens in "
                         f"{shape.sequences} slots with at least one padding token")
    if batch.max_seqlen > shape.max_seqlen:
        raise ValueError(f"pad_to_static: a sequence of {batch.max_seqlen} tokens exceeds max_seqlen "
                         f"{shape.max_seqlen}")
    pad = shape.tokens - T
    full, rest = divmod(pad, shape.piece_tokens)
    pieces = [shape.piece_tokens] * full + ([rest] if rest else [])
    lengths = batch.seqlens.tolist() + [0] * (shape.sequences - S - len(pieces)) + pieces
    cu = varlen.cu_seqlens_from_lengths(lengths)
    dev = batch.input_ids.device
    ids = torch.cat([batch.input_ids, batch.input_ids.new_full((pad,), shape.pad_id)])
    tt = None
    if batch.token_type_ids is not None:
        tt = torch.cat([batch.token_type_ids, batch.token_type_ids.new_zeros(pad)])
    cu = cu.to(dev)
    return PackedBatch(input_ids=ids, cu_seqlens=cu, max_seqlen=shape.max_seqlen,
                       position_ids=varlen.position_ids_from_cu_seqlens(cu, shape.tokens), token_type_ids=tt,
                       real_sequences=S, real_tokens=T)

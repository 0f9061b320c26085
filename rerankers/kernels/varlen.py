"""The varlen contract, ``cu_seqlens``, and everything derived from it (torch only: no triton).

S sequences of T tokens in all are packed along dim 0 without padding. ``cu_seqlens`` (S+1,) int32
holds the cumulative lengths: ``cu_seqlens[0] == 0``, non-decreasing, ``cu_seqlens[-1] == T``;
sequence i is tokens ``cu_seqlens[i]:cu_seqlens[i+1]`` (empty where two entries are equal).
:class:`rerankers.data.packing.PackedBatch`, the kernels' dispatch and references, and the
mamba-ssm backend all derive lengths, positions and indices here.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def seqlens(cu_seqlens: Tensor) -> Tensor:
    """(S+1,) -> (S,) int64 sequence lengths."""
    return (cu_seqlens[1:] - cu_seqlens[:-1]).long()


def max_seqlen(cu_seqlens: Tensor) -> int:
    """The longest sequence's length (a host synchronisation; S >= 1)."""
    return int(seqlens(cu_seqlens).max())


def first_token_index(cu_seqlens: Tensor) -> Tensor:
    """(S,) int64 index into T of each sequence's first token ([CLS] pooling)."""
    return cu_seqlens[:-1].long()


def last_token_index(cu_seqlens: Tensor) -> Tensor:
    """(S,) int64 index into T of each sequence's last token (causal pooling)."""
    return cu_seqlens[1:].long() - 1


def sequence_ids(cu_seqlens: Tensor, total: int | None = None) -> Tensor:
    """(T,) int64 index of the sequence each token belongs to. ``total``: T where the caller knows it
    (no host synchronisation then); None reads it from ``cu_seqlens[-1]``."""
    T = int(cu_seqlens[-1]) if total is None else total
    return torch.repeat_interleave(torch.arange(cu_seqlens.numel() - 1, device=cu_seqlens.device),
                                   seqlens(cu_seqlens), output_size=T)


def position_ids_from_cu_seqlens(cu_seqlens: Tensor, total: int | None = None) -> Tensor:
    """(T,) int64 positions restarting at 0 in each sequence (``total`` as in :func:`sequence_ids`)."""
    seq = sequence_ids(cu_seqlens, total)
    return torch.arange(seq.numel(), device=cu_seqlens.device) - first_token_index(cu_seqlens)[seq]


def cu_seqlens_from_lengths(lengths: Sequence[int] | Tensor, device: torch.device | str | None = None) -> Tensor:
    """(S,) lengths -> (S+1,) int32 cumulative lengths starting at 0."""
    lens = torch.as_tensor(lengths, dtype=torch.int64, device=device)
    return torch.nn.functional.pad(torch.cumsum(lens, 0), (1, 0)).to(torch.int32)


def check_cu_seqlens(cu_seqlens: Tensor, total: int, name: str = "cu_seqlens", check_values: bool = True) -> None:
    """Raise ValueError unless ``cu_seqlens`` is a 1-D (S+1,) int32 (or int64) tensor that starts at 0,
    never decreases and ends at ``total`` = T. ``check_values=False`` checks the dtype and shape only
    (no host synchronisation: the dispatch's check on every call; the references check the values)."""
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(f"{name} must be 1-D (S+1,), got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be int32, got {cu_seqlens.dtype}")
    if not check_values:
        return
    cu = cu_seqlens.to("cpu", torch.long)
    if int(cu[0]) != 0 or int(cu[-1]) != total:
        raise ValueError(f"{name} must start at 0 and end at T={total}, got {int(cu[0])}..{int(cu[-1])}")
    if bool((cu[1:] < cu[:-1]).any()):
        raise ValueError(f"{name} must be non-decreasing")


def right_padded_lengths(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """(S,) lengths of right-padded rows: input_ids and attention_mask (S, L), each row's ones first; a
    ValueError for other shapes or for a mask that is not right-padded (every padded path's check)."""
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(f"input_ids and attention_mask must be (S, L) of one shape, got "
                         f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    lengths = mask.sum(1)
    if bool((mask != (torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None])).any()):
        raise ValueError("attention_mask must be right-padded (each row: ones, then zeros)")
    return lengths

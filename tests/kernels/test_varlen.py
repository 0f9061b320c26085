"""rerankers.kernels.varlen: every cu_seqlens derivation against a direct computation, and the checks."""
from __future__ import annotations

import pytest
import torch

from rerankers.kernels import varlen

LENGTHS = [3, 0, 1, 5, 0]


def direct(lengths: list[int]) -> dict[str, list[int]]:
    """The derivations written as plain loops over the sequences."""
    out: dict[str, list[int]] = dict(cu=[0], seq=[], pos=[], first=[], last=[])
    for s, n in enumerate(lengths):
        out["first"].append(out["cu"][-1])
        out["last"].append(out["cu"][-1] + n - 1)
        out["seq"] += [s] * n
        out["pos"] += list(range(n))
        out["cu"].append(out["cu"][-1] + n)
    return out


def test_cu_seqlens_from_lengths():
    cu = varlen.cu_seqlens_from_lengths(LENGTHS)
    assert cu.dtype == torch.int32 and cu.tolist() == direct(LENGTHS)["cu"]
    assert varlen.cu_seqlens_from_lengths(torch.tensor(LENGTHS)).tolist() == direct(LENGTHS)["cu"]
    assert varlen.cu_seqlens_from_lengths([]).tolist() == [0]


def test_derivations_match_direct_loops():
    want = direct(LENGTHS)
    cu = varlen.cu_seqlens_from_lengths(LENGTHS)
    T = sum(LENGTHS)
    assert varlen.seqlens(cu).tolist() == LENGTHS and varlen.seqlens(cu).dtype == torch.int64
    assert varlen.max_seqlen(cu) == max(LENGTHS)
    assert varlen.first_token_index(cu).tolist() == want["first"]
    assert varlen.last_token_index(cu).tolist() == want["last"]
    for total in (None, T):
        seq, pos = varlen.sequence_ids(cu, total), varlen.position_ids_from_cu_seqlens(cu, total)
        assert seq.tolist() == want["seq"] and pos.tolist() == want["pos"]
        assert seq.dtype == pos.dtype == torch.int64
    # int64 cu_seqlens give the same
    assert varlen.position_ids_from_cu_seqlens(cu.long()).tolist() == want["pos"]


def test_no_sequences():
    cu = varlen.cu_seqlens_from_lengths([])
    assert varlen.sequence_ids(cu).numel() == 0 and varlen.position_ids_from_cu_seqlens(cu).numel() == 0
    varlen.check_cu_seqlens(cu, 0)


@pytest.mark.parametrize("cu,total,msg", [
    (torch.tensor([[0, 3]], dtype=torch.int32), 3, "must be 1-D"),
    (torch.zeros(0, dtype=torch.int32), 0, "must be 1-D"),
    (torch.tensor([0.0, 3.0]), 3, "must be int32"),
    (torch.tensor([0, 3], dtype=torch.int16), 3, "must be int32"),
    (torch.tensor([1, 3], dtype=torch.int32), 3, "start at 0 and end at T=3"),
    (torch.tensor([0, 3], dtype=torch.int32), 4, "start at 0 and end at T=4"),
    (torch.tensor([0, 4, 2, 5], dtype=torch.int32), 5, "non-decreasing"),
])
def test_check_cu_seqlens_errors(cu, total, msg):
    with pytest.raises(ValueError, match=msg):
        varlen.check_cu_seqlens(cu, total)


def test_check_cu_seqlens_accepts_the_contract_and_skips_values_on_request():
    varlen.check_cu_seqlens(varlen.cu_seqlens_from_lengths(LENGTHS), sum(LENGTHS))
    varlen.check_cu_seqlens(varlen.cu_seqlens_from_lengths(LENGTHS).long(), sum(LENGTHS))
    varlen.check_cu_seqlens(torch.tensor([0, 4, 2, 5], dtype=torch.int32), 9, check_values=False)
    with pytest.raises(ValueError, match="cu_x must be int32"):
        varlen.check_cu_seqlens(torch.tensor([0.0]), 0, name="cu_x", check_values=False)


def test_right_padded_lengths_and_its_errors():
    from rerankers.kernels.varlen import right_padded_lengths
    ids = torch.zeros(3, 4, dtype=torch.long)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    assert right_padded_lengths(ids, mask).tolist() == [2, 4, 0]
    with pytest.raises(ValueError, match="must be right-padded"):
        right_padded_lengths(ids, torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"must be \(S, L\) of one shape"):
        right_padded_lengths(ids, mask[:, :3])

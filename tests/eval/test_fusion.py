"""Fusion of a reranked run with its first stage: each method against its formula."""
import pytest

from rerankers.errors import UsageError
from rerankers.eval.fusion import fuse_runs

FIRST = {"q1": {"a": 10.0, "b": 8.0, "c": 2.0}, "q2": {"x": 1.0, "y": 3.0}}
RERANKED = {"q1": {"a": 0.1, "b": 0.9, "c": 0.5}, "q2": {"x": 5.0, "y": -1.0}}


def _minmax(docs):
    lo, hi = min(docs.values()), max(docs.values())
    return {d: (s - lo) / (hi - lo) for d, s in docs.items()}


def test_wsum_is_the_weighted_sum_of_min_max_scores():
    fused = fuse_runs(FIRST, RERANKED, "wsum", weight=0.7)
    for q in FIRST:
        f, r = _minmax(FIRST[q]), _minmax(RERANKED[q])
        assert fused[q] == pytest.approx({d: 0.3 * f[d] + 0.7 * r[d] for d in f})


def test_rrf_sums_reciprocal_ranks():
    fused = fuse_runs(FIRST, RERANKED, "rrf", k=60)
    ranks_first = {"a": 1, "b": 2, "c": 3}
    ranks_reranked = {"b": 1, "c": 2, "a": 3}
    assert fused["q1"] == pytest.approx({d: 1 / (60 + ranks_first[d]) + 1 / (60 + ranks_reranked[d]) for d in "abc"})


@pytest.mark.parametrize("kw, flag", [({"method": "max"}, "--fuse"),
                                      ({"method": "wsum", "weight": 2.0}, "--fuse-weight")])
def test_bad_arguments_name_the_flag(kw, flag):
    with pytest.raises(UsageError, match=flag):
        fuse_runs(FIRST, RERANKED, **kw)

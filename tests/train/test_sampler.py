"""The sampler: deterministic from (seed, epoch, position), whole groups, shards of one global step."""
import logging

import pytest

from rerankers.errors import TrainingDataError
from rerankers.train.examples import Candidate, TrainQuery
from rerankers.train.sampler import GroupSampler, usable_queries


def _queries(n: int, negatives: int = 5) -> list[TrainQuery]:
    return [TrainQuery(f"q{i}", f"query {i}", [Candidate(f"p{i}", "pos", 2.0), Candidate(f"p{i}b", "pos b", 3.0)],
                       [Candidate(f"n{i}_{j}", f"neg {j}") for j in range(negatives)]) for i in range(n)]


def test_groups_are_a_positive_then_distinct_negatives_and_deterministic():
    s = GroupSampler(_queries(10), group_size=4, queries_per_step=3, seed=7)
    g = s.group(0, 2)
    assert g.docs[0].label > 0 and all(c.label == 0 for c in g.docs[1:])
    assert len({c.docid for c in g.docs}) == 4
    again = GroupSampler(_queries(10), group_size=4, queries_per_step=3, seed=7)
    assert again.group(0, 2) == g and again.step(5) == s.step(5)
    assert GroupSampler(_queries(10), 4, 3, seed=8).step(0) != s.step(0)


def test_an_epoch_visits_every_query_once_and_epochs_differ():
    s = GroupSampler(_queries(10), group_size=3, queries_per_step=4, seed=1)
    assert s.steps_per_epoch == 3
    seen = [g.qid for step in range(3) for g in s.step(step)[1]]
    assert sorted(seen) == sorted(f"q{i}" for i in range(10))
    assert s.step(2)[2] == 2  # the last, partial step holds the remaining 2 groups
    assert s.step(3)[0] == 1 and s.epoch_order(1) != s.epoch_order(0)
    assert s.total_steps(epochs=2, max_steps=None) == 6 and s.total_steps(0.5, None) == 2
    assert s.total_steps(1, max_steps=11) == 11


def test_processes_split_the_same_global_step():
    s = GroupSampler(_queries(9), group_size=3, queries_per_step=5, seed=3)
    _, whole, n = s.step(0)
    parts = [s.step(0, rank=r, world_size=2)[1] for r in range(2)]
    assert n == 5 and sorted(g.qid for p in parts for g in p) == sorted(g.qid for g in whole)
    assert parts[0] == whole[0::2] and parts[1] == whole[1::2]


def test_queries_that_cannot_fill_a_group_are_counted_in_one_warning(caplog):
    qs = _queries(3, negatives=5) + _queries(2, negatives=1)
    qs[-1] = TrainQuery("q-nopos", "x", [], qs[-1].negatives)
    with caplog.at_level(logging.WARNING):
        kept = usable_queries(qs, group_size=4)
    assert [q.qid for q in kept] == ["q0", "q1", "q2"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 of 5 training queries skipped" in warnings[0].getMessage()
    with pytest.raises(TrainingDataError, match="group of 9"):
        usable_queries(qs, group_size=9)


def test_distillation_keeps_only_documents_with_teacher_scores(caplog):
    q = TrainQuery("q", "t", [Candidate("p", "pos", 1.0, teacher=3.0)],
                   [Candidate("a", "x", teacher=1.0), Candidate("b", "y"), Candidate("c", "z", teacher=0.5)])
    kept = usable_queries([q], group_size=3, needs_teacher=True)
    assert [c.docid for c in kept[0].negatives] == ["a", "c"]
    with pytest.raises(TrainingDataError, match="teacher"):
        usable_queries([q], group_size=4, needs_teacher=True)

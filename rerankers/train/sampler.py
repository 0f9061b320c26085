"""Deterministic groups of 1 positive + (n - 1) negatives, and the steps that hold them.

Everything is a pure function of ``(seed, epoch, position)``: the order of the queries in an epoch
is a permutation drawn from ``seed + epoch``; the group of query ``q`` in epoch ``e`` is drawn from
its own generator seeded with ``(seed, e, q)``. The sampler therefore has no hidden state: a run
resumed at step ``k`` draws exactly the groups an uninterrupted run draws at step ``k``, and a
process of a multi-process run draws the same global step as one process does, then keeps its
share (``groups[rank::world_size]``).
"""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Sequence

import torch

from rerankers.errors import TrainingDataError
from rerankers.train.examples import Candidate, TrainQuery

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Group:
    """One query's group: ``docs[0]`` is the positive, ``docs[1:]`` the sampled negatives."""

    qid: str
    query: str
    docs: tuple[Candidate, ...]


def usable_queries(queries: Sequence[TrainQuery], group_size: int, needs_teacher: bool = False
                   ) -> list[TrainQuery]:
    """The queries that can fill a group; the others are counted in one warning (an error if none is left).

    A query needs a positive and ``group_size - 1`` negatives (with teacher scores on all of them
    where the loss distils from a teacher).
    """
    keep, short, no_teacher = [], [], []
    for q in queries:
        positives, negatives = q.positives, q.negatives
        if needs_teacher:
            positives = [c for c in positives if c.teacher is not None]
            negatives = [c for c in negatives if c.teacher is not None]
            if len(positives) < len(q.positives) or len(negatives) < len(q.negatives):
                no_teacher.append(q.qid)
            q = TrainQuery(q.qid, q.text, positives, negatives, q.source)
        if not q.positives or len(q.negatives) < group_size - 1:
            short.append(q.qid)
        else:
            keep.append(q)
    if no_teacher:
        logger.warning("%d queries have documents without a teacher score; those documents are left out "
                       "(e.g. %s)", len(no_teacher), ", ".join(no_teacher[:5]))
    if short:
        logger.warning("%d of %d training queries skipped: no positive, or fewer than %d negatives for a group "
                       "of %d (e.g. %s)", len(short), len(queries), group_size - 1, group_size,
                       ", ".join(short[:5]))
    if not keep:
        raise TrainingDataError(f"no training query can fill a group of {group_size} (1 positive + "
                                f"{group_size - 1} negatives{' with teacher scores' if needs_teacher else ''}): "
                                f"{len(queries)} queries read, none usable; lower --group-size or raise "
                                "--negatives-depth")
    return keep


class GroupSampler:
    """Steps of ``queries_per_step`` groups over ``queries``, epoch after epoch.

    Args:
        queries:          usable queries (:func:`usable_queries`)
        group_size:       documents per group (1 positive + group_size - 1 negatives)
        queries_per_step: groups per optimizer step (the global batch, over all processes)
        seed:             the run's seed
    """

    def __init__(self, queries: Sequence[TrainQuery], group_size: int, queries_per_step: int, seed: int):
        self.queries = list(queries)
        self.group_size = group_size
        self.queries_per_step = queries_per_step
        self.seed = seed
        self._order: tuple[int, list[int]] | None = None  # (epoch, order): one permutation per epoch

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.queries) / self.queries_per_step)

    def total_steps(self, epochs: float, max_steps: int | None) -> int:
        """Optimizer steps of the run: ``max_steps`` where given, else ``epochs`` (fractions allowed) epochs."""
        if max_steps is not None:
            return max_steps
        return max(1, math.ceil(epochs * self.steps_per_epoch))

    def epoch_order(self, epoch: int) -> list[int]:
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = (epoch, torch.randperm(len(self.queries), generator=g).tolist())
        return self._order[1]

    def group(self, epoch: int, index: int) -> Group:
        """The group of query ``index`` in ``epoch``: a positive, then negatives without replacement."""
        q = self.queries[index]
        rng = random.Random(f"{self.seed}/{epoch}/{index}")
        positive = q.positives[rng.randrange(len(q.positives))]
        negatives = rng.sample(q.negatives, self.group_size - 1)
        return Group(q.qid, q.text, (positive, *negatives))

    def step(self, step: int, rank: int = 0, world_size: int = 1) -> tuple[int, list[Group], int]:
        """(epoch, this process's groups, the step's number of groups over all processes) of a 0-based step."""
        epoch, within = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        chosen = order[within * self.queries_per_step:(within + 1) * self.queries_per_step]
        return epoch, [self.group(epoch, i) for i in chosen[rank::world_size]], len(chosen)

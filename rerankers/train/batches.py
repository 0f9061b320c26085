"""Groups -> packed micro-batches of whole groups, within a token budget.

A process's groups of one optimizer step are encoded with the model's template
(:meth:`CrossEncoder.encode`) and split, in order, into micro-batches of at most
``max_tokens`` real tokens (padded tokens for a backbone that pads, such as T5); a group is never
split, so the loss over a group sees all its scores. A group longer than the budget gets a
micro-batch of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from rerankers.data.batching import pack_encoded, token_budget_batches
from rerankers.data.packing import PackedBatch
from rerankers.train.sampler import Group


@dataclass
class MicroBatch:
    """``num_groups`` groups of ``group_size`` pairs, packed.

    batch:    PackedBatch of num_groups * group_size sequences (group-major: group 0's docs first)
    labels:   (num_groups, group_size) float32 graded relevance
    teacher:  (num_groups, group_size) float32 teacher scores, or None
    qids:     the groups' query ids (for messages)
    truncated: pairs cut to the template's limits (the document to fit max_length, or the query to max_query_tokens)
    """

    batch: PackedBatch
    labels: Tensor
    teacher: Tensor | None
    qids: list[str]
    truncated: int

    @property
    def num_groups(self) -> int:
        return self.labels.shape[0]


def _group_costs(lengths: Sequence[int], group_size: int, padded: bool) -> list[int]:
    """Token cost of each group: its real tokens, or (padded) group_size x its longest sequence."""
    costs = []
    for g in range(len(lengths) // group_size):
        part = lengths[g * group_size:(g + 1) * group_size]
        costs.append(max(part) * group_size if padded else sum(part))
    return costs


def micro_batches(model, groups: Sequence[Group], max_tokens: int) -> list[MicroBatch]:
    """Encode ``groups`` with ``model``'s template and pack them into micro-batches of whole groups."""
    if not groups:
        return []
    n = len(groups[0].docs)
    queries = [g.query for g in groups for _ in g.docs]
    docs = [c.text for g in groups for c in g.docs]
    ids = [f"{g.qid}/{c.docid}" for g in groups for c in g.docs]
    enc = model.encode(queries, docs, ids=ids, warn=False)
    truncated = set(enc.truncated) | set(enc.queries_truncated)
    costs = _group_costs(enc.lengths, n, padded=model.pads)
    out = []
    for chosen in token_budget_batches(costs, max_tokens, sort=False):
        rows = [g * n + j for g in chosen for j in range(n)]
        labels = torch.tensor([[c.label for c in groups[g].docs] for g in chosen], dtype=torch.float32)
        teacher = None
        if all(c.teacher is not None for g in chosen for c in groups[g].docs):
            teacher = torch.tensor([[c.teacher for c in groups[g].docs] for g in chosen], dtype=torch.float32)
        out.append(MicroBatch(pack_encoded(enc, rows), labels, teacher, [groups[g].qid for g in chosen],
                              sum(r in truncated for r in rows)))
    return out

"""Groups -> packed micro-batches of whole groups, within a token budget.

A process's groups of one optimizer step are encoded with the model's template
(:meth:`CrossEncoder.encode`) and split, in order, into micro-batches of at most
``max_tokens`` real tokens (padded tokens for a backbone that pads, such as T5); a group is never
split, so the loss over a group sees all its scores. A group longer than the budget gets a
micro-batch of its own.

With a :class:`~rerankers.data.packing.StaticShape` (``rerank train --static-tokens``) every
micro-batch is padded to that one shape (:func:`~rerankers.data.packing.pad_to_static`): the budget
is then its tokens less one (at least one padding token), and a group that cannot fit is a
TrainingConfigError naming ``--static-tokens``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from rerankers.data.batching import pack_encoded, token_budget_batches
from rerankers.data.packing import PackedBatch, StaticShape, pad_to_static
from rerankers.errors import TrainingConfigError
from rerankers.models.graphed import STATIC_KINDS
from rerankers.train.sampler import Group


@dataclass
class MicroBatch:
    """``num_groups`` groups of ``group_size`` pairs, packed.

    batch:    PackedBatch of num_groups * group_size sequences (group-major: group 0's docs first), then
              padding slots where it is padded to a fixed shape (``batch.real_sequences``)
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

    @property
    def num_pairs(self) -> int:
        """The real pairs: the first ``num_pairs`` scores of the batch are the groups' (group-major)."""
        return self.labels.numel()

    @property
    def real_tokens(self) -> int:
        """The real pairs' tokens (padding not counted)."""
        return self.batch.num_real_tokens




def static_shape_for(model, tokens: int, max_pairs: int) -> StaticShape:
    """The fixed shape ``--static-tokens tokens`` gives ``model``'s micro-batches of at most ``max_pairs``
    pairs: slots for them and the padding pieces, every sequence bounded by the template's max_length,
    padding of the tokenizer's pad id. A kind outside :data:`rerankers.models.graphed.STATIC_KINDS` is a
    TrainingConfigError."""
    if model.backbone_type not in STATIC_KINDS:
        raise TrainingConfigError(f"--static-tokens: fixed-shape packing is supported for the "
                                  f"{', '.join(STATIC_KINDS)} backbones, not {model.backbone_type}")
    pad_id = getattr(model.tokenizer, "pad_token_id", None)
    return StaticShape.for_budget(tokens, max_pairs, int(model.template.max_length),
                                  0 if pad_id is None else int(pad_id))


def _group_costs(lengths: Sequence[int], group_size: int, padded: bool) -> list[int]:
    """Token cost of each group: its real tokens, or (padded) group_size x its longest sequence."""
    costs = []
    for g in range(len(lengths) // group_size):
        part = lengths[g * group_size:(g + 1) * group_size]
        costs.append(max(part) * group_size if padded else sum(part))
    return costs


def micro_batches(model, groups: Sequence[Group], max_tokens: int,
                  static: StaticShape | None = None) -> list[MicroBatch]:
    """Encode ``groups`` with ``model``'s template and pack them into micro-batches of whole groups;
    with ``static``, each padded to that fixed shape (``max_tokens`` is then unused)."""
    if not groups:
        return []
    n = len(groups[0].docs)
    queries = [g.query for g in groups for _ in g.docs]
    docs = [c.text for g in groups for c in g.docs]
    ids = [f"{g.qid}/{c.docid}" for g in groups for c in g.docs]
    enc = model.encode(queries, docs, ids=ids, warn=False)
    truncated = set(enc.truncated) | set(enc.queries_truncated)
    costs = _group_costs(enc.lengths, n, padded=model.pads)
    if static is not None:
        max_tokens = static.tokens - 1
        for g, cost in enumerate(costs):
            if cost > max_tokens or not static.fits(cost, n):
                raise TrainingConfigError(f"--static-tokens {static.tokens}: the group of query {groups[g].qid} holds "
                                          f"{cost} tokens ({n} pairs) and does not fit with a padding token; "
                                          f"raise --static-tokens to at least {cost + 1}")
    out = []
    for chosen in token_budget_batches(costs, max_tokens, sort=False):
        rows = [g * n + j for g in chosen for j in range(n)]
        labels = torch.tensor([[c.label for c in groups[g].docs] for g in chosen], dtype=torch.float32)
        teacher = None
        if all(c.teacher is not None for g in chosen for c in groups[g].docs):
            teacher = torch.tensor([[c.teacher for c in groups[g].docs] for g in chosen], dtype=torch.float32)
        batch = pack_encoded(enc, rows)
        if static is not None:
            batch = pad_to_static(batch, static)
        out.append(MicroBatch(batch, labels, teacher, [groups[g].qid for g in chosen],
                              sum(r in truncated for r in rows)))
    return out

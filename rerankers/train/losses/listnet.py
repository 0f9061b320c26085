"""ListNet (Cao et al. 2007), top-one probability form.

The cross-entropy between the top-one distribution of the target and that of the scores:

    p_g    = softmax(labels_g)            (or softmax(teacher_g) with use_teacher=True)    (n,)
    loss_g = -sum_i p_gi * log softmax(s_g)_i
    loss   = mean over the groups whose target is not constant                      -> scalar

A group whose target is constant (all labels equal, e.g. all zero) says nothing about the order and
would only pull its scores together; it contributes nothing (a batch of only such groups gives 0
with a zero gradient). ``use_teacher=True`` makes ``teacher`` required.
"""
from __future__ import annotations

import torch
from torch import Tensor

from rerankers.train.losses.base import RankingLoss, mean_over_groups


class ListNetLoss(RankingLoss):
    """Top-one cross-entropy between softmax(labels or teacher) and softmax(scores)."""

    name = "listnet"
    needs_teacher = False

    def __init__(self, use_teacher: bool = False):
        super().__init__()
        self.use_teacher = bool(use_teacher)
        self.needs_teacher = self.use_teacher     # per instance: the loop asks the instance

    def hparams(self) -> dict:
        return {"use_teacher": self.use_teacher}

    def forward(self, scores: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
        s, y, t = self._inputs(scores, labels, teacher if self.use_teacher else None)
        target = t if self.use_teacher else y
        p = torch.softmax(target, dim=1)
        per_group = -(p * torch.log_softmax(s, dim=1)).sum(dim=1)
        informative = target.amax(dim=1) > target.amin(dim=1)
        return mean_over_groups(per_group, informative)

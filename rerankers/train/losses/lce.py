"""Localized contrastive estimation (LCE; Gao, Dai & Callan 2021, the loss of RankMamba).

Each group is THE positive in column 0 followed by n-1 sampled negatives; the loss is the
cross-entropy of a softmax over the group with column 0 the target:

    loss_g = -log( exp(s_g0) / sum_j exp(s_gj) ) = logsumexp_j(s_gj) - s_g0        scores (G, n)
    loss   = mean_g loss_g                                                          -> scalar

Labels only check the sampler (on the host: :meth:`RankingLoss.check_inputs`): column 0 must hold a
positive (label > 0) with the group's maximal label, else ``ValueError`` (a programming error, not a
user's). Ties of column 0 with another column are allowed (that column then counts as a negative).
"""
from __future__ import annotations

import torch
from torch import Tensor

from rerankers.train.losses.base import RankingLoss


class LCELoss(RankingLoss):
    """Softmax cross-entropy over each group, column 0 the positive."""

    name = "lce"
    needs_teacher = False

    def _check_labels(self, labels: Tensor) -> None:
        first = labels[:, 0]
        bad = (first < labels.max(dim=1).values) | (first <= 0)
        if bool(bad.any()):
            g = int(bad.nonzero()[0, 0])
            raise ValueError(f"lce: group {g} has no positive in column 0 (labels {labels[g].tolist()}); "
                             "the sampler must put the group's most relevant document first")

    def forward(self, scores: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
        s, _, _ = self._inputs(scores, labels)
        return (torch.logsumexp(s, dim=1) - s[:, 0]).mean()

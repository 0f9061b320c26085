"""Pointwise binary cross-entropy with logits.

Every document is an independent binary example, relevant where its label is > 0:

    z_gi   = 1 if labels_gi > 0 else 0                                              (G, n)
    l_gi   = -( w * z_gi * log sigmoid(s_gi) + (1 - z_gi) * log(1 - sigmoid(s_gi)) )
           = w * z_gi * softplus(-s_gi) + (1 - z_gi) * softplus(s_gi)               (stable form)
    loss   = mean over all G * n documents (= mean over groups of the group means)  -> scalar

``pos_weight`` w (default 1) up-weights the positives, e.g. n-1 to balance 1 positive per n-1 negatives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rerankers.train.losses.base import RankingLoss, check_positive


class BCELoss(RankingLoss):
    """Binary cross-entropy with logits; target 1 where label > 0."""

    name = "bce"
    needs_teacher = False

    def __init__(self, pos_weight: float = 1.0):
        super().__init__()
        self.pos_weight = check_positive(self.name, "pos_weight", pos_weight)

    def hparams(self) -> dict:
        return {"pos_weight": self.pos_weight}

    def forward(self, scores: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
        s, y, _ = self._inputs(scores, labels)
        target = (y > 0).to(s.dtype)
        # a fill, not a copy of a host scalar (which would make the host wait for the GPU)
        pos_weight = torch.full((), self.pos_weight, dtype=s.dtype, device=s.device) if self.pos_weight != 1.0 else None
        return F.binary_cross_entropy_with_logits(s, target, pos_weight=pos_weight)

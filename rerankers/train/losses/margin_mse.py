"""Margin-MSE distillation (Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with
Cross-Architecture Knowledge Distillation").

The student learns the teacher's score margins between the positive (column 0) and each negative:

    loss = mean_{g, j=1..n-1} ( (s_g0 - s_gj) - (t_g0 - t_gj) )^2                   scores, teacher (G, n)

With ``all_pairs=True`` the margins of every pair i < j of the group are matched instead:

    loss = mean_{g, i<j} ( (s_gi - s_gj) - (t_gi - t_gj) )^2

Both are means over the same number of pairs per group, so they equal the mean over groups of the
per-group means. Labels are not used. ``teacher=None`` raises ``ValueError``; so do groups of one document.
"""
from __future__ import annotations

import torch
from torch import Tensor

from rerankers.train.losses.base import RankingLoss


class MarginMSELoss(RankingLoss):
    """MSE between student and teacher margins (positive vs each negative, or all pairs)."""

    name = "margin-mse"
    needs_teacher = True

    def __init__(self, all_pairs: bool = False):
        super().__init__()
        self.all_pairs = bool(all_pairs)

    def hparams(self) -> dict:
        return {"all_pairs": self.all_pairs}

    def forward(self, scores: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
        s, _, t = self._inputs(scores, labels, teacher)
        n = s.shape[1]
        if n < 2:
            raise ValueError(f"margin-mse: needs at least 2 documents per group, got {n}")
        if not self.all_pairs:
            return ((s[:, :1] - s[:, 1:]) - (t[:, :1] - t[:, 1:])).pow(2).mean()
        i, j = torch.triu_indices(n, n, offset=1, device=s.device)
        return ((s[:, i] - s[:, j]) - (t[:, i] - t[:, j])).pow(2).mean()

"""RankNet (Burges et al. 2005) over all label-ordered pairs of each group.

    P_g    = {(i, j) : labels_gi > labels_gj}                                       pairs of group g
    l_gij  = log(1 + exp(-sigma (s_gi - s_gj))) = softplus(-sigma (s_gi - s_gj))
    loss_g = mean_{(i,j) in P_g} l_gij
    loss   = mean over the groups with P_g non-empty                                -> scalar

Tied labels make no pair; a group with all labels equal (e.g. all zero) contributes nothing, and a
batch without any pair gives 0 (with a zero gradient, never NaN).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rerankers.train.losses.base import RankingLoss, check_positive, masked_mean, mean_over_groups


class RankNetLoss(RankingLoss):
    """Pairwise logistic loss over pairs with label_i > label_j."""

    name = "ranknet"
    needs_teacher = False

    def __init__(self, sigma: float = 1.0):
        super().__init__()
        self.sigma = check_positive(self.name, "sigma", sigma)

    def hparams(self) -> dict:
        return {"sigma": self.sigma}

    def forward(self, scores: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
        s, y, _ = self._inputs(scores, labels)
        pairs = y[:, :, None] > y[:, None, :]                                       # (G, n, n)
        per_pair = F.softplus(-self.sigma * (s[:, :, None] - s[:, None, :]))        # (G, n, n)
        per_group, has_pairs = masked_mean(per_pair, pairs, dim=(1, 2))
        return mean_over_groups(per_group, has_pairs)

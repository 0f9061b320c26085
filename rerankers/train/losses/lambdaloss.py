"""LambdaLoss (Wang, Li, Golbandi, Bendersky & Najork 2018, "The LambdaLoss Framework for Ranking
Metric Optimization") with NDCG weights.

Per group, with r_i the 1-based rank of document i under the current scores (sorted descending,
no gradient through the sort) and D_r = log2(1 + r):

    gain_i  = 2^labels_i - 1 (labels < 0 count as 0);   G_i = gain_i / maxDCG      maxDCG: ideal DCG(@k)
    rho_ij  = |G_i - G_j| * |1/D_{r_i} - 1/D_{r_j}|                                 LambdaRank's |dNDCG|
    delta_ij = |G_i - G_j| * (1/D_{|r_i - r_j|} - 1/D_{|r_i - r_j| + 1})            NDCG-Loss2's weight
    w_ij    = rho_ij + mu * delta_ij   ("ndcg-loss2++", default) | rho_ij ("lambdarank") | delta_ij ("ndcg-loss2")
    loss_g  = sum_{i,j: labels_i > labels_j} -w_ij * log2 sigmoid(sigma (s_i - s_j))
            = sum w_ij * softplus(-sigma (s_i - s_j)) / ln 2
    loss    = mean over the groups with at least one pair                           -> scalar
    scores, labels (G, n)

Cut-off ``k`` (NDCG@k): maxDCG is the ideal DCG@k, 1/D_r is 0 beyond rank k (so rho is the exact
|dNDCG@k| of swapping i and j) and only pairs with at least one document in the top k count.
``k=None`` is the full list. Groups whose labels are all equal contribute nothing; a batch without a
pair gives 0 with a zero gradient.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from rerankers.errors import TrainingConfigError
from rerankers.train.losses.base import RankingLoss, check_positive, mean_over_groups

WEIGHTINGS = ("ndcg-loss2++", "lambdarank", "ndcg-loss2")


class LambdaLoss(RankingLoss):
    """LambdaLoss with NDCG-Loss2++ (default), LambdaRank or NDCG-Loss2 pair weights."""

    name = "lambdaloss"
    needs_teacher = False

    def __init__(self, weighting: str = "ndcg-loss2++", k: int | None = None, sigma: float = 1.0, mu: float = 10.0):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise TrainingConfigError(
                f"loss 'lambdaloss': unknown weighting {weighting!r}; known: {', '.join(WEIGHTINGS)}")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise TrainingConfigError(f"loss 'lambdaloss': k must be an integer >= 1 or None, got {k!r}")
        self.weighting = weighting
        self.k = k
        self.sigma = check_positive(self.name, "sigma", sigma)
        self.mu = check_positive(self.name, "mu", mu, allow_zero=True)

    def hparams(self) -> dict:
        return {"weighting": self.weighting, "k": self.k, "sigma": self.sigma, "mu": self.mu}

    @torch.no_grad()
    def pair_weights(self, scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(G, n) fp32 scores and labels -> (weights (G, n, n), pairs (G, n, n) bool); no gradient."""
        n = scores.shape[1]
        k = n if self.k is None else min(self.k, n)
        positions = torch.arange(1, n + 1, device=scores.device)
        order = torch.argsort(scores, dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order).scatter_(1, order, positions.expand_as(order))       # (G, n), 1-based
        inv_disc = 1.0 / torch.log2(1.0 + positions.to(scores.dtype))                          # (n,) 1/D_r

        gains = torch.pow(2.0, labels.clamp(min=0)) - 1.0
        ideal = gains.sort(dim=1, descending=True).values[:, :k]
        max_dcg = (ideal * inv_disc[:k]).sum(dim=1, keepdim=True)
        g = gains / max_dcg.clamp(min=torch.finfo(scores.dtype).tiny)
        g_diff = (g[:, :, None] - g[:, None, :]).abs()

        pairs = labels[:, :, None] > labels[:, None, :]
        if k < n:
            top = ranks <= k
            pairs &= top[:, :, None] | top[:, None, :]

        weights = torch.zeros_like(g_diff)
        if self.weighting != "ndcg-loss2":
            inv_rank = torch.where(ranks <= k, inv_disc[ranks - 1], torch.zeros((), device=scores.device))
            weights += g_diff * (inv_rank[:, :, None] - inv_rank[:, None, :]).abs()
        if self.weighting != "lambdarank":
            dist = (ranks[:, :, None] - ranks[:, None, :]).abs().clamp(min=1).to(scores.dtype)   # 0 only on i == j
            delta = 1.0 / torch.log2(1.0 + dist) - 1.0 / torch.log2(2.0 + dist)
            weights += (self.mu if self.weighting == "ndcg-loss2++" else 1.0) * delta * g_diff
        return weights, pairs

    def forward(self, scores: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
        s, y, _ = self._inputs(scores, labels)
        weights, pairs = self.pair_weights(s.detach(), y)
        per_pair = weights * F.softplus(-self.sigma * (s[:, :, None] - s[:, None, :])) / math.log(2.0)
        per_group = torch.where(pairs, per_pair, per_pair.new_zeros(())).sum(dim=(1, 2))
        return mean_over_groups(per_group, pairs.any(dim=2).any(dim=1))

"""Training losses, one per module, all called as ``loss(scores, labels, teacher=None) -> scalar``.

    scores (G, n), labels (G, n), teacher (G, n) or None; the result is the mean over the G groups.

    name          class            formula (per group g)
    "lce"         LCELoss          logsumexp_j s_j - s_0                      column 0 the positive
    "bce"         BCELoss          mean_i BCE-with-logits(s_i, labels_i > 0)  (pos_weight)
    "margin-mse"  MarginMSELoss    mean_j ((s_0 - s_j) - (t_0 - t_j))^2       (all_pairs), needs teacher
    "ranknet"     RankNetLoss      mean_{y_i > y_j} softplus(-sigma (s_i - s_j))   (sigma)
    "listnet"     ListNetLoss      -sum_i softmax(y)_i log softmax(s)_i       (use_teacher)
    "lambdaloss"  LambdaLoss       sum_{y_i > y_j} w_ij softplus(-sigma (s_i - s_j)) / ln 2
                                   (weighting "ndcg-loss2++" | "lambdarank" | "ndcg-loss2", k, sigma, mu)

``build_loss(name, **kwargs)`` builds one by name; an unknown name or argument raises
:class:`~rerankers.errors.TrainingConfigError`.
"""
from __future__ import annotations

import inspect

from torch import nn

from rerankers.errors import TrainingConfigError
from rerankers.train.losses.base import RankingLoss
from rerankers.train.losses.bce import BCELoss
from rerankers.train.losses.lambdaloss import LambdaLoss
from rerankers.train.losses.lce import LCELoss
from rerankers.train.losses.listnet import ListNetLoss
from rerankers.train.losses.margin_mse import MarginMSELoss
from rerankers.train.losses.ranknet import RankNetLoss

LOSSES: dict[str, type] = {cls.name: cls for cls in
                           (LCELoss, BCELoss, MarginMSELoss, RankNetLoss, ListNetLoss, LambdaLoss)}


def build_loss(name: str, **kwargs) -> nn.Module:
    """The loss registered as ``name``, built with ``kwargs``; TrainingConfigError for an unknown name or argument."""
    cls = LOSSES.get(name)
    if cls is None:
        raise TrainingConfigError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no arguments"
        raise TrainingConfigError(f"loss {name!r}: unknown argument(s) {', '.join(unknown)}; it takes {takes}")
    return cls(**kwargs)


__all__ = ["LOSSES", "build_loss", "RankingLoss", "LCELoss", "BCELoss", "MarginMSELoss", "RankNetLoss",
           "ListNetLoss", "LambdaLoss"]

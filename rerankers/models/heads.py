"""Scoring heads: pooled states (S, H) -> one logit per sequence (S,).

``ScoreHead(activation="none")`` is a single Linear(H, 1) (Mamba). With an activation it is
``dense -> activation -> out_proj`` on the pooled [CLS] state, the shape of BERT's pooler +
classifier (tanh), RoBERTa's classification head (tanh) and ELECTRA's (gelu), so existing
sequence-classification cross-encoders load into it exactly.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from rerankers.errors import ModelConfigError

ACTIVATIONS = ("none", "tanh", "gelu")


class ScoreHead(nn.Module):
    """(S, H) -> (S,) logits. activation: "none" (Linear only), "tanh" or "gelu" (dense first)."""

    def __init__(self, hidden_size: int, activation: str = "none", dropout: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ModelConfigError(f"unknown head activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
        self.activation = activation
        self.dense: nn.Linear | None = nn.Linear(hidden_size, hidden_size) if activation != "none" else None
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.out_proj.weight, std=0.02)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, pooled: Tensor) -> Tensor:
        x = pooled
        if self.dense is not None:
            x = self.dense(self.dropout(x))
            x = torch.tanh(x) if self.activation == "tanh" else nn.functional.gelu(x)
        return self.out_proj(self.dropout(x)).squeeze(-1)


def true_false_score(logits: Tensor) -> Tensor:
    """(S, 2) logits of [true, false] -> (S,) log p(true) over the two (monoT5)."""
    return torch.log_softmax(logits.float(), dim=-1)[:, 0]

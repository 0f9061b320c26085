"""What every training loss shares: the interface, input checks and masked means.

A loss is an ``nn.Module`` called by the training loop as

    loss(scores, labels, teacher=None) -> Tensor   # scalar, mean over query groups

    scores  (G, n) float   model scores of G query groups of n documents each (may require grad)
    labels  (G, n) float   graded relevance (TREC grades 0-3, or 1/0 for positives/negatives)
    teacher (G, n) float   teacher scores, or None (distillation losses only)

Sampler groups put THE positive in column 0 and negatives (label 0) in columns 1..; only LCE and
Margin-MSE use that position, the pairwise and listwise losses use the labels. Everything is computed
in fp32 whatever the dtype of ``scores`` (bf16 under autocast); float64 inputs stay float64.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from rerankers.errors import TrainingConfigError


class RankingLoss(nn.Module):
    """Base class: ``name`` is the key in ``LOSSES``; ``needs_teacher`` says whether forward needs ``teacher``."""

    name: str = ""
    needs_teacher: bool = False

    def forward(self, scores: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())

    def hparams(self) -> dict:
        """The constructor arguments (for logs and the train report)."""
        return {}

    def check_inputs(self, labels: Tensor, teacher: Tensor | None = None) -> None:
        """The checks of the values of ``labels`` / ``teacher`` (ValueError): run on host tensors by the training
        loop before it copies them to the device, and by :meth:`forward` where they are on the CPU. On CUDA,
        :meth:`forward` skips them (reading a device tensor's values makes the host wait for the GPU)."""
        if teacher is not None and not bool(torch.isfinite(teacher).all()):
            raise ValueError(f"{self.name}: teacher scores hold NaN or inf (a document without a teacher score?)")
        self._check_labels(labels)

    def _check_labels(self, labels: Tensor) -> None:
        """A subclass's check of the label values (G, n) (LCE: the positive in column 0)."""

    # ---- helpers for subclasses -------------------------------------------------------------------
    def _inputs(self, scores: Tensor, labels: Tensor, teacher: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Checks the shapes (and, for host tensors, the values: :meth:`check_inputs`) and returns (scores,
        labels, teacher) as (G, n) tensors of at least fp32.

        bf16 / fp16 / fp32 scores compute in fp32; float64 stays float64 (gradcheck).
        """
        if scores.dim() != 2:
            raise ValueError(f"{self.name}: scores must be (groups, docs), got shape {tuple(scores.shape)}")
        if labels.shape != scores.shape:
            raise ValueError(f"{self.name}: labels shape {tuple(labels.shape)} != scores shape {tuple(scores.shape)}")
        dtype = torch.promote_types(scores.dtype, torch.float32)
        if teacher is not None:
            if teacher.shape != scores.shape:
                raise ValueError(
                    f"{self.name}: teacher shape {tuple(teacher.shape)} != scores shape {tuple(scores.shape)}")
            teacher = teacher.detach().to(dtype)
        elif self.needs_teacher:
            raise ValueError(f"{self.name}: needs teacher scores (teacher=None)")
        labels = labels.detach().to(dtype)
        if labels.device.type == "cpu" and (teacher is None or teacher.device.type == "cpu"):
            self.check_inputs(labels, teacher)
        return scores.to(dtype), labels, teacher


def masked_mean(values: Tensor, mask: Tensor, dim: int | tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Mean of ``values`` where ``mask`` over ``dim`` -> (means, has_any); 0 (with grad) where nothing is masked in.

    ``torch.where`` keeps masked-out entries out of both value and gradient, so no NaN leaks in.
    """
    count = mask.sum(dim=dim)
    total = torch.where(mask, values, values.new_zeros(())).sum(dim=dim)
    return total / count.clamp(min=1), count > 0


def mean_over_groups(per_group: Tensor, valid: Tensor) -> Tensor:
    """Mean of (G,) per-group losses over the groups where ``valid``; 0 with grad when none is."""
    return masked_mean(per_group, valid, dim=0)[0]


def check_positive(loss: str, arg: str, value: float, allow_zero: bool = False) -> float:
    """A finite number > 0 (>= 0 with allow_zero), else TrainingConfigError naming the argument."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and abs(value) != float("inf") and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise TrainingConfigError(f"loss {loss!r}: {arg} must be a finite number {bound}, got {value!r}")
    return float(value)

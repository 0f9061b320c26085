"""AdamW with the weight-decay exclusions of Mamba and BERT, and the learning-rate schedules.

No weight decay on ``A_log`` and ``D`` (Mamba's SSM parameters, as mamba-ssm marks them with
``_no_weight_decay``), on norms (any parameter of a LayerNorm/RMSNorm module, or named ``*norm*``)
and on biases. :func:`mark_no_weight_decay` sets ``param._no_weight_decay = True`` on those, so the
choice is visible on the parameters themselves; :func:`param_groups` reads the marks.
"""
from __future__ import annotations

import math

import torch
from torch import nn

_SSM_NAMES = ("A_log", "D")


def mark_no_weight_decay(model: nn.Module) -> int:
    """Mark biases, norm weights and Mamba's ``A_log``/``D``; returns how many parameters were marked."""
    marked = 0
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "norm" in type(module).__name__.lower() \
            or "norm" in module_name.rsplit(".", 1)[-1].lower()
        for name, p in module.named_parameters(recurse=False):
            if is_norm or name == "bias" or name.endswith("_bias") or name in _SSM_NAMES \
                    or getattr(p, "_no_weight_decay", False):
                if not getattr(p, "_no_weight_decay", False):
                    p._no_weight_decay = True
                marked += 1
    return marked


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None, head_lr: float | None = None
                 ) -> list[dict]:
    """AdamW groups of the trainable parameters: decayed, and marked ``_no_weight_decay`` (decay 0); with
    ``head_lr``, the parameters of ``model.head`` (a fresh scoring head) form groups of their own at that rate."""
    mark_no_weight_decay(model)
    head = getattr(model, "head", None) if head_lr is not None else None
    in_head = {id(p) for p in head.parameters()} if head is not None else set()
    groups = []
    for part, rate in ((False, lr), (True, head_lr)):
        decay, no_decay = [], []
        for p in model.parameters():
            if p.requires_grad and (id(p) in in_head) == part:
                (no_decay if getattr(p, "_no_weight_decay", False) else decay).append(p)
        extra = {"lr": rate} if rate is not None else {}
        groups += [{"params": decay, "weight_decay": weight_decay, **extra},
                   {"params": no_decay, "weight_decay": 0.0, **extra}]
        if head is None:
            break
    return groups


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device,
                    head_lr: float | None = None) -> torch.optim.AdamW:
    """AdamW (fused on CUDA, the deterministic for-loop implementation on the CPU)."""
    kwargs = {"fused": True} if device.type == "cuda" else {"foreach": False}
    return torch.optim.AdamW(param_groups(model, weight_decay, lr, head_lr), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                             **kwargs)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The multiplier of the base learning rate at 0-based ``step``: linear warmup, then the schedule.

    linear: decays to 0 at ``total_steps``; cosine: half a cosine to 0; constant: 1 after warmup.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, schedule: str
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, schedule))

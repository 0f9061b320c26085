"""An optimizer step that a NaN / inf never reaches, and the step's numbers read back without waiting.

The host must not wait for the GPU inside a training step: one ``float(loss)`` makes it idle while the
GPU runs the backward, and then leaves the GPU idle while the host queues the next forward (Mamba's
forward is host-bound layer by layer). So the numbers of a step stay on the device:

* :func:`guarded_step` clips, checks and steps. With a fused AdamW (the CUDA default) the check stays
  on the device: a non-finite loss or gradient norm sets the optimizer's ``found_inf``, and the fused
  kernel skips that step's update (as it does for ``torch.amp.GradScaler``); the weights stay those of
  the step before. Other optimizers (the CPU's deterministic for-loop AdamW) get the host check, which
  raises before the update.
* :class:`rerankers.utils.device.ReadBack` copies a few numbers (loss, gradient norm, counts) into pinned
  host memory behind the step's work. The loop reads step k's numbers once step k+1 is queued, and raises
  for a non-finite step k then: its update never happened (step k+1's may have, in memory; nothing is
  saved after a non-finite step).
"""
from __future__ import annotations

import math
from typing import Callable, NoReturn

import torch
from torch import Tensor


def defers(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` can skip a non-finite step on the device (fused Adam / AdamW take ``found_inf``)."""
    return bool(optimizer.defaults.get("fused"))


def guarded_step(optimizer: torch.optim.Optimizer, params: list[Tensor], loss: Tensor, max_grad_norm: float | None,
                 on_bad: Callable[[str, float], NoReturn]) -> Tensor:
    """Clip the gradients of ``params`` to ``max_grad_norm`` (None: no clipping), then step ``optimizer``
    unless ``loss`` (a scalar tensor, detached) or the gradient norm is NaN / inf; returns the norm as a
    0-d tensor (NaN without clipping).

    Where the optimizer cannot skip on the device (:func:`defers`), a non-finite value calls
    ``on_bad(what, value)`` ("loss" / "gradient norm"), which must raise, before the update.
    """
    deferred = defers(optimizer)
    if not deferred:
        value = float(loss)
        if not math.isfinite(value):
            on_bad("loss", value)
    if max_grad_norm is None:
        norm = torch.full((), math.nan, device=loss.device)
    else:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        if not deferred:
            value = float(norm)
            if not math.isfinite(value):
                on_bad("gradient norm", value)
    if not deferred:
        optimizer.step()
        return norm
    bad = ~torch.isfinite(loss)
    if max_grad_norm is not None:
        bad = bad | ~torch.isfinite(norm)
    optimizer.found_inf = bad.float()
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf  # (as GradScaler does: a later plain step() must not see it)
    return norm

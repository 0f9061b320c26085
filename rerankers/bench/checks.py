"""Correctness before timing: every system is compared on fresh random pairs before it is timed.

- ours: the packed path in fp32 against the padded oracle path (each row alone for Mamba, masked
  padded attention for BERT), and under bf16 autocast against the fp32 reference (Mamba: the
  pure-PyTorch kernels), norm-wise relative error of the backbone's output; NaN never passes.
- an anchor: its fp32 scores against ours with the same weights (a different implementation of the
  same function: the comparison is the point).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

import torch

from rerankers.bench.systems import Ours, System, infer_scores
from rerankers.bench.workload import model_workload, msmarco_lengths, random_batch

logger = logging.getLogger(__name__)

FP32_TOL = 1e-3
BF16_TOL = 3e-2


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _fresh_batch(model, device: torch.device, seed: int, n: int = 16):
    gen = torch.Generator().manual_seed(seed + 7919)
    fit = model_workload(model)
    return random_batch(msmarco_lengths(n, gen, fit["max_length"]), fit["vocab_size"], gen,
                        token_types=fit["token_types"]).to(device)


@contextlib.contextmanager
def _reference_kernels(model) -> Iterator[bool]:
    """The backbone on its pure-PyTorch reference kernels, where it has a choice (Mamba)."""
    backbone = model.backbone
    if not hasattr(backbone, "kernel_backend"):
        yield False
        return
    old = backbone.kernel_backend
    backbone.kernel_backend = "reference"
    try:
        yield True
    finally:
        backbone.kernel_backend = old


def check_ours(name: str, model, device: torch.device, autocast: torch.dtype | None, seed: int) -> dict[str, Any]:
    """fp32 packed == the padded oracle; bf16 (autocast) packed ~ the fp32 reference."""
    batch = _fresh_batch(model, device, seed)
    model.eval()
    with torch.no_grad():
        packed = Ours(name, "packed", model).scores(batch).float()
        padded = model.forward_padded(batch).float()
        with _reference_kernels(model) as has_ref:
            ref_out = model.backbone(batch).float()
        out = {"backbone": name, "system": f"{name} ours", "fp32_packed_vs_padded": rel_err(packed, padded),
               "reference": "pure-PyTorch kernels" if has_ref else "fp32 packed path"}
        if autocast is not None:
            with torch.autocast(device.type, dtype=autocast):
                low = model.backbone(batch).float()
            out["bf16_vs_fp32_reference"] = rel_err(low, ref_out)
        nan = bool(torch.isnan(packed).any() or torch.isnan(padded).any())
    out["nan"] = nan
    out["ok"] = (not nan and out["fp32_packed_vs_padded"] < FP32_TOL
                 and out.get("bf16_vs_fp32_reference", 0.0) < BF16_TOL)
    return out


def check_anchor(system: System, model, device: torch.device, seed: int) -> dict[str, Any]:
    """The anchor's fp32 scores against ours (packed, fp32) with the same weights."""
    batch = _fresh_batch(model, device, seed)
    model.eval()
    ours = infer_scores(Ours(system.name, "packed", model), batch, None).float()
    theirs = infer_scores(system, batch, None).float()
    err = rel_err(theirs, ours)
    nan = bool(torch.isnan(theirs).any())
    return {"backbone": system.name, "system": f"{system.name} {system.impl}", "fp32_vs_ours": err, "nan": nan,
            "ok": not nan and err < FP32_TOL}


def check_graphed(system: System, model, device: torch.device, autocast: torch.dtype | None, seed: int
                  ) -> dict[str, Any]:
    """Mode graphed's scores (padded to a bucket, replayed from a CUDA graph) against eager packed scores under
    the same autocast: a fresh batch (captured), then another of the same lengths with other token ids (the same
    bucket: replayed from the first one's graph, its inputs copied in); within BF16_TOL (bf16 matmuls of another
    row count round differently), FP32_TOL without autocast."""
    import dataclasses

    batch = _fresh_batch(model, device, seed)
    other = dataclasses.replace(batch, input_ids=batch.input_ids[torch.randperm(batch.num_tokens,
                                                                                device=batch.input_ids.device)])
    model.eval()
    errs, nan = [], False
    with torch.no_grad():
        for b in (batch, other):
            eager = infer_scores(Ours(system.name, "packed", model), b, autocast).float()
            graphed = infer_scores(system, b, autocast).float()
            errs.append(rel_err(graphed, eager))
            nan |= bool(torch.isnan(graphed).any())
    return {"backbone": system.name, "system": system.label, "graphed_vs_eager": max(errs), "nan": nan,
            "ok": not nan and max(errs) < (BF16_TOL if autocast is not None else FP32_TOL)}


# ------------------------------------------------------------------------------ before a mode times
def ours_passes(name: str, model, device: torch.device, autocast: torch.dtype | None, seed: int,
                result: dict[str, Any]) -> bool:
    """:func:`check_ours`, recorded in ``result``; a failure is logged and skips the whole backbone."""
    result["checks"].append(check_ours(name, model, device, autocast, seed))
    if result["checks"][-1]["ok"]:
        return True
    logger.error("%s: correctness check failed, nothing of it timed: %s", name, result["checks"][-1])
    result["skipped"].append({"system": f"{name} ours", "reason": "correctness check failed"})
    return False


def checked_system(kind: str, name: str, model, device: torch.device, seed: int, result: dict[str, Any],
                   **ours_options: Any) -> System | None:
    """Ours in mode ``kind``, or the anchor ``kind`` on ``device`` with our model moved to the CPU once the
    anchor passed :func:`check_anchor` (only the anchor's weights on the card while it is timed); None where
    the anchor is unavailable, inapplicable or failed its check (noted in ``result``). Undo with
    :func:`put_back`."""
    from rerankers.bench import anchors

    if kind not in anchors.ANCHORS:
        return Ours(name, kind, model, **ours_options)
    system = anchors.try_anchor(kind, name, model, result["skipped"])
    if system is None:
        return None
    system.module.to(device)
    result["checks"].append(check_anchor(system, model, device, seed))
    if not result["checks"][-1]["ok"]:
        logger.error("%s: correctness check failed, not timed: %s", system.label, result["checks"][-1])
        result["skipped"].append({"system": system.label, "reason": "correctness check failed"})
        system.module.cpu()
        return None
    model.cpu()
    return system


def put_back(system: System, model, device: torch.device) -> None:
    """After an anchor was timed: its weights off the card, ours back on it."""
    if system.impl != "ours":
        system.module.cpu()
        model.to(device)

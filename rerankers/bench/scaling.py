"""``rerank bench scaling``: training step time and peak memory against sequence length.

Each step holds ``budget_tokens`` tokens as ``max(1, budget // L)`` sequences of exactly L tokens
(random ids), so that a linear-time backbone (Mamba) shows a flat time per token and a quadratic one
(attention) a rising one; L doubles from ``min_length`` to ``max_length`` or until the card's memory
runs out (recorded, and longer lengths of that system are skipped). BERT-family models get
``max_position_embeddings`` = the longest L (random weights: the architecture only). Systems: ours
packed for every backbone, and the anchors where they apply (no padding at equal lengths); a
pointwise loss (BCE), since a sequence of 16K tokens makes a group of one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from rerankers.bench import anchors as anchor_mod
from rerankers.bench.build import build_model
from rerankers.bench.systems import Ours, TrainStep
from rerankers.bench.timing import new_result, release, time_calls
from rerankers.bench.train import autocast_dtype
from rerankers.bench.workload import random_batch
from rerankers.errors import UsageError

logger = logging.getLogger(__name__)


@dataclass
class ScalingBenchConfig:
    backbones: Sequence[str] = ("mamba-130m", "bert-base")
    anchors: Sequence[str] = ("mamba-ssm", "transformers")
    min_length: int = 128
    max_length: int = 16384
    budget_tokens: int = 16384
    warmup: int = 2
    steps: int = 5
    device: str = "cuda"
    dtype: str = "bfloat16"
    tokenizer: str | None = None
    seed: int = 0


def lengths_of(cfg: ScalingBenchConfig) -> list[int]:
    if cfg.min_length < 2 or cfg.max_length < cfg.min_length:
        raise UsageError(f"--min-length {cfg.min_length} / --max-length {cfg.max_length}: need 2 <= min <= max")
    out, n = [], cfg.min_length
    while n <= cfg.max_length:
        out.append(n)
        n *= 2
    return out


def positions_for(name: str, max_len: int) -> dict[str, Any]:
    """The architecture override that lets preset ``name`` take sequences of ``max_len`` tokens: BERT-family
    presets get ``max_position_embeddings`` = max_len (random weights: the shape only); others need none."""
    from rerankers.models.presets import PRESETS
    preset = PRESETS.get(name)
    arch = preset.architecture if preset is not None else {}
    return {"max_position_embeddings": max_len} if "max_position_embeddings" in arch or (
        preset is not None and preset.kind == "bert") else {}


def run_scaling_bench(cfg: ScalingBenchConfig, command: str | None = None, on_row=None) -> dict[str, Any]:
    device = torch.device(cfg.device)
    dtype = autocast_dtype(cfg.dtype, device)
    lengths = lengths_of(cfg)
    result = new_result("scaling", cfg, device, command, lengths=lengths)
    for name in cfg.backbones:
        shape = positions_for(name, max(lengths))
        model, _ = build_model(name, init="random", tokenizer=cfg.tokenizer, shape=shape or None, seed=cfg.seed)
        model.to(device)
        vocab = model.backbone.get_input_embeddings().weight.shape[0]
        systems = [Ours(name, "packed", model)]
        for kind in cfg.anchors:
            if kind == "sentence-transformers":
                continue
            anchor = anchor_mod.try_anchor(kind, name, model, result["skipped"])
            if anchor is not None:
                systems.append(anchor)
                anchor.module.to(device)
        for system in systems:
            if system.impl != "ours":
                model.cpu()
            for L in lengths:
                n_seq = max(1, cfg.budget_tokens // L)
                gen = torch.Generator().manual_seed(cfg.seed + L)
                batches = [random_batch([L] * n_seq, vocab, gen, token_types=model.backbone_type == "bert").to(device)
                           for _ in range(2)]
                holder = [TrainStep(system, device, group_size=1, autocast=dtype, loss="bce")]
                try:
                    timing = time_calls(lambda i: holder[0](batches[i % 2]), device, cfg.warmup, cfg.steps)
                except torch.OutOfMemoryError:
                    timing = None
                finally:
                    holder.clear()
                    system.module.zero_grad(set_to_none=True)
                    release(device)
                if timing is None:
                    result["skipped"].append({"system": system.label, "length": L, "reason": "out of memory"})
                    logger.warning("%s at L=%d: out of memory; longer lengths skipped", system.label, L)
                    break
                tokens = L * n_seq
                row = {"backbone": name, "impl": system.impl, "mode": system.mode, "length": L, "sequences": n_seq,
                       "tokens": tokens, "ms": timing.step_s * 1e3,
                       "ms_per_1k_tokens": timing.step_s * 1e6 / tokens,
                       "real_tokens_per_s": tokens / timing.step_s, "peak_memory_gib": timing.peak_memory_gib,
                       "spread": timing.spread}
                result["rows"].append(row)
                logger.info("%s L=%d x%d: %.1f ms, %.2f GiB", system.label, L, n_seq, row["ms"], row["peak_memory_gib"])
                if on_row is not None:
                    on_row(result)
            if system.impl != "ours":
                system.module.cpu()
                model.to(device)
        del systems, model
        release(device)
    return result

"""``rerank bench train``: the full training step of each backbone, packed vs padded vs one sequence at a
time (and packed to one fixed shape, ``static``), beside the anchors, on MS MARCO-shaped pairs or on real texts.

A row: system (backbone, whose code, mode), pairs per step, real (unpadded) and padded tokens, the step
time (steps back to back, their mean: :func:`rerankers.bench.timing.time_calls`), real tokens/s, pairs/s,
MFU (6 x non-embedding parameters per real token over the card's bf16 peak; 4 x under LoRA, whose frozen
weights get no gradient), peak memory and trained parameters.
Before any timing, each system is checked on fresh inputs: ours in bf16
against the fp32 reference path (and fp32 packed against fp32 padded), each anchor in fp32 against
ours with the same weights.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from rerankers.bench.build import build_model
from rerankers.bench.checks import checked_system, ours_passes, put_back
from rerankers.bench.systems import Ours, System, TrainStep, recomputes
from rerankers.bench.timing import new_result, release, time_calls
from rerankers.bench.workload import (
    load_text_pairs,
    model_workload,
    padded_tokens,
    synthetic_batches,
    text_batches,
)
from rerankers.data.packing import PackedBatch, pad_to_static
from rerankers.errors import TrainingConfigError, UsageError, one_line
from rerankers.train.batches import static_shape_for
from rerankers.train.progress import peak_flops, training_flops_per_token

logger = logging.getLogger(__name__)


@dataclass
class TrainBenchConfig:
    """backbones: presets or folders; modes: of ours (packed, padded, static, single; single at the smallest
    ``pairs`` only); pairs: pairs per step (multiples of group_size); anchors: ANCHORS names to add where
    they apply; candidates: a file of real texts (else MS MARCO-shaped random ids). static_tokens: the
    fixed token count of mode static (None: per pairs count, the batches' largest + 1 rounded up to a
    multiple of 256); compile: torch.compile mode of ours packed / static ("off", "default",
    "reduce-overhead"), as ``rerank train --compile``. lora: LoRA ranks, each a row of ours packed with the backbone
    frozen under peft adapters of that rank and the head trained (as ``rerank train --lora R``), beside full
    fine-tuning; qlora: the same over a base whose target layers hold 4-bit NF4 weights (bitsandbytes). warmup:
    untimed steps, at least one per batch of the rotation (a batch's first step may build per-shape state: cuDNN
    attention plans for a padded shape, 1.8 s for transformers' BERT on the H200)."""

    backbones: Sequence[str] = ("mamba-130m", "bert-base")
    modes: Sequence[str] = ("packed", "padded", "single")
    pairs: Sequence[int] = (64, 256)
    anchors: Sequence[str] = ("mamba-ssm", "transformers")
    candidates: str | None = None
    depth: int = 100
    group_size: int = 8
    warmup: int = 3
    steps: int = 10
    single_steps: int = 3
    device: str = "cuda"
    dtype: str = "bfloat16"
    init: str = "random"
    tokenizer: str | None = None
    seed: int = 0
    static_tokens: int | None = None
    compile: str = "off"
    lora: Sequence[int] = ()
    qlora: Sequence[int] = ()
    extra: dict[str, Any] = field(default_factory=dict)


STATIC_ROUND = 256  # mode static without --static-tokens: the batches' largest + 1, rounded up to this


def static_batches(model, batches: Sequence[PackedBatch], n_pairs: int, tokens: int | None) -> list[PackedBatch]:
    """``batches`` (of ``n_pairs`` pairs each) padded to one fixed shape (:func:`pad_to_static`): ``tokens``
    tokens (None: the largest batch + 1, rounded up to a multiple of :data:`STATIC_ROUND`); a batch that does
    not fit is a UsageError naming --static-tokens. TrainingConfigError for a kind without a static path."""
    need = max(b.num_tokens for b in batches) + 1
    tokens = tokens if tokens is not None else -(-need // STATIC_ROUND) * STATIC_ROUND
    if tokens < need:
        raise UsageError(f"--static-tokens {tokens}: a batch of {n_pairs} pairs holds {need - 1} tokens; "
                         f"give at least {need} (one padding token)")
    shape = static_shape_for(model, tokens, n_pairs)
    return [pad_to_static(b, shape) for b in batches]


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast (the recipe) on CUDA; on the CPU (smoke runs) fp32 unless asked."""
    if name == "float32" or (device.type == "cpu" and name == "auto"):
        return None
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "auto": torch.bfloat16}[name]


def _row(system: System, batches, timing, n_pairs: int, flops_per_token: float,
         device: torch.device) -> dict[str, Any]:
    real = sum(b.num_real_tokens for b in batches) / len(batches)
    computed = sum(padded_tokens(b) if system.mode == "padded" else b.num_tokens for b in batches) / len(batches)
    sec = timing.step_s
    peak = peak_flops(device)
    tok_s = real / sec
    return {"backbone": system.name, "impl": system.impl, "mode": system.mode, "pairs": n_pairs,
            "real_tokens": round(real), "padded_tokens": round(computed), "compile": system.compile,
            "lora": system.lora, "base": system.base,
            "trainable_parameters": sum(p.numel() for p in system.module.parameters() if p.requires_grad),
            "ms": sec * 1e3, "real_tokens_per_s": tok_s, "pairs_per_s": n_pairs / sec,
            "mfu": tok_s * flops_per_token / peak if peak else None, "peak_memory_gib": timing.peak_memory_gib,
            "spread": timing.spread, "timed_steps": len(timing.seconds), "warmup_steps": timing.warmup,
            "pipelined": timing.pipelined, "median_ms": timing.median_s * 1e3,
            "lap_ms": [round(t * 1e3, 3) for t in timing.seconds]}


def run_train_bench(cfg: TrainBenchConfig, command: str | None = None, on_row=None) -> dict[str, Any]:
    """Check, then time every (backbone, system, pairs); returns {"env", "config", "checks", "rows",
    "skipped"}. ``on_row(result)`` is called after every row (the CLI saves the partial result)."""
    device = torch.device(cfg.device)
    dtype = autocast_dtype(cfg.dtype, device)
    result = new_result("train", cfg, device, command)
    texts = load_text_pairs(cfg.candidates, cfg.depth) if cfg.candidates else None
    for n in cfg.pairs:
        if n < cfg.group_size or n % cfg.group_size:
            raise UsageError(f"--pairs {n}: must be a positive multiple of the group size {cfg.group_size}")
    for name in cfg.backbones:
        model, info = build_model(name, init=cfg.init, tokenizer=cfg.tokenizer, seed=cfg.seed)
        if texts is not None and not info["texts_ok"]:
            raise UsageError(f"--candidates needs a real tokenizer for {name}: pass --tokenizer")
        model.to(device)
        flops = training_flops_per_token(model)
        batches = {n: [b.to(device) for b in (text_batches(model, texts, n, 4) if texts is not None else
                                                  synthetic_batches(n, 4, seed=cfg.seed + n, **model_workload(model)))]
                   for n in cfg.pairs}
        if not ours_passes(name, model, device, dtype, cfg.seed, result):
            continue
        for kind in [*cfg.modes, *cfg.anchors]:  # sentence-transformers: inference only, no training row
            if kind == "recompute" and not recomputes(model):
                result["skipped"].append({"system": f"{name} ours recompute", "reason": "no Mamba-1 mixers"})
                continue
            system = checked_system(kind, name, model, device, cfg.seed, result, compile=cfg.compile)
            if system is None:
                continue
            for n in cfg.pairs:
                if system.mode == "single" and n != min(cfg.pairs):
                    continue  # one sequence at a time: at the smallest batch only (PackMamba's comparison)
                feed = batches[n]
                if system.mode == "static":
                    try:
                        feed = static_batches(model, feed, n, cfg.static_tokens)
                    except (TrainingConfigError, UsageError) as e:  # a kind without it; a batch too large
                        result["skipped"].append({"system": system.label, "pairs": n, "reason": str(e)})
                        continue
                row = _time_system(system, feed, n, cfg, device, dtype, flops, result)
                if row is not None and on_row is not None:
                    on_row(result)
            put_back(system, model, device)
            del system
            release(device)
        for rank in cfg.lora:
            _time_lora(name, model, rank, batches, cfg, device, dtype, flops, result, on_row)
        for rank in cfg.qlora:
            _time_lora(name, model, rank, batches, cfg, device, dtype, flops, result, on_row, nf4=True)
        del model, batches
        release(device)
    return result


def _time_lora(name: str, model, rank: int, batches, cfg: TrainBenchConfig, device: torch.device,
               dtype: torch.dtype | None, flops: float, result: dict[str, Any], on_row, nf4: bool = False) -> None:
    """Rows of ours packed on a copy of ``model`` whose backbone is frozen under LoRA adapters of ``rank``
    (``nf4``: its target layers in 4-bit NF4, QLoRA). ``model`` waits on the CPU meanwhile, so that the peak
    memory is the adapted model's alone."""
    from rerankers.train.lora import apply_lora, quantize_base_nf4

    label = f"{name} ours packed lora={rank}" + (" nf4" if nf4 else "")
    model.cpu()
    twin = copy.deepcopy(model)
    try:
        if nf4:
            quantize_base_nf4(twin, device)
        apply_lora(twin, rank)
    except TrainingConfigError as e:  # a kind without LoRA targets
        result["skipped"].append({"system": label, "reason": str(e)})
        model.to(device)
        return
    twin.to(device)
    release(device)
    system = Ours(name, "packed", twin)
    flops = flops * 4 / 6  # frozen weights: forward (2N) + the activations' gradients (2N), no weight gradients
    for n in cfg.pairs:
        if _time_system(system, batches[n], n, cfg, device, dtype, flops, result) is not None and on_row is not None:
            on_row(result)
    del system, twin
    release(device)
    model.to(device)


def _time_system(system: System, batches, n: int, cfg: TrainBenchConfig, device: torch.device,
                 dtype: torch.dtype | None, flops: float, result: dict[str, Any]) -> dict[str, Any] | None:
    steps = cfg.single_steps if system.mode == "single" else cfg.steps
    warmup = min(cfg.warmup, 1) if system.mode == "single" else max(cfg.warmup, len(batches))
    holder = [TrainStep(system, device, cfg.group_size, autocast=dtype)]
    failure = None
    losses: list = []
    try:
        timing = time_calls(lambda i: losses.append(holder[0](batches[i % len(batches)])), device, warmup, steps)
        last = float(losses[-1])  # (the step skips a non-finite update on the device; a row must not hide one)
        if not math.isfinite(last):
            failure = f"the loss is {last} after {len(losses)} steps: not a training step worth timing"
    except torch.OutOfMemoryError:
        failure = "out of memory"
    except Exception as e:  # noqa: BLE001 - e.g. torch.compile failing on one system: recorded, the others go on
        failure = f"failed: {one_line(e, 500)}"
        logger.debug("%s at %d pairs", system.label, n, exc_info=True)
    finally:
        holder.clear()  # the optimizer state and gradients go before the next system
        system.module.zero_grad(set_to_none=True)
        if hasattr(getattr(system, "forward", None), "clear"):
            system.forward.clear()  # cuda-graphs: this row's captured graphs and their memory
        release(device)
    if failure is not None:
        result["skipped"].append({"system": system.label, "pairs": n, "reason": failure})
        logger.warning("%s at %d pairs: %s", system.label, n, failure)
        return None
    row = _row(system, batches, timing, n, flops, device)
    result["rows"].append(row)
    logger.info("%s %d pairs: %.1f ms, %.0f real tok/s, %.2f GiB", system.label, n, row["ms"],
                row["real_tokens_per_s"], row["peak_memory_gib"])
    return row

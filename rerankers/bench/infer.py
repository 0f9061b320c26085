"""``rerank bench infer``: reranking throughput over a run's top-k, ours beside the anchors.

Rows, over the same pairs: ``ours packed`` through :class:`~rerankers.reranker.Reranker` end to end
(tokenisation included, as a user calls it) and model-only; ours ``padded`` / ``single`` and the
transformers SDPA anchor model-only on the same token ids (padded systems batched by a padded
token budget); sentence-transformers' ``CrossEncoder.predict`` end to end. One timed call is one
pass over all pairs; the first ``warmup`` passes are dropped. Without texts (no ``candidates``) the
pairs are MS MARCO-shaped random ids and only the model-only rows run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from rerankers.bench import anchors as anchor_mod
from rerankers.bench.build import build_model
from rerankers.bench.checks import check_graphed, checked_system, ours_passes, put_back
from rerankers.bench.systems import Ours, infer_scores
from rerankers.bench.timing import new_result, release, time_calls
from rerankers.bench.train import autocast_dtype
from rerankers.bench.workload import load_text_pairs, model_workload, msmarco_lengths, random_batch
from rerankers.data.batching import pack_encoded, token_budget_batches
from rerankers.errors import ModelConfigError, UsageError
from rerankers.models.graphed import check_graphable

logger = logging.getLogger(__name__)


@dataclass
class InferBenchConfig:
    backbones: Sequence[str] = ("mamba-130m", "bert-base")
    modes: Sequence[str] = ("packed", "padded")
    anchors: Sequence[str] = ("transformers", "sentence-transformers", "mamba-ssm")
    candidates: str | None = None
    depth: int = 100
    pairs: int = 4096             # random-id pairs when there are no texts
    batch_tokens: int = 16384
    st_batch_size: int = 128
    warmup: int = 1
    repeats: int = 3
    device: str = "cuda"
    dtype: str = "bfloat16"
    init: str = "random"
    tokenizer: str | None = None
    seed: int = 0


def _id_batches(model, texts, cfg: InferBenchConfig, padded: bool, graphed: bool = False):
    """The pairs as batches of a token budget (padded systems: batch size x longest; graphed: one token under
    the budget, as the Reranker fills them, so that a full batch pads to the budget)."""
    budget = cfg.batch_tokens - 1 if graphed else cfg.batch_tokens
    if texts is not None:
        enc = model.encode(texts.queries, texts.docs, warn=False)
        return [pack_encoded(enc, idx) for idx in token_budget_batches(enc.lengths, budget,
                                                                       sort=True, padded=padded)]
    gen = torch.Generator().manual_seed(cfg.seed)
    fit = model_workload(model)
    lengths = sorted(msmarco_lengths(cfg.pairs, gen, fit["max_length"]), reverse=True)
    out = []
    for idx in token_budget_batches(lengths, budget, sort=False, padded=padded):
        out.append(random_batch([lengths[i] for i in idx], fit["vocab_size"], gen, token_types=fit["token_types"]))
    return out


def _row(label: dict[str, Any], n_pairs: int, tokens: int, timing, scope: str) -> dict[str, Any]:
    sec = timing.step_s
    return {**label, "scope": scope, "pairs": n_pairs, "real_tokens": tokens, "ms": sec * 1e3,
            "pairs_per_s": n_pairs / sec, "real_tokens_per_s": tokens / sec,
            "peak_memory_gib": timing.peak_memory_gib, "spread": timing.spread, "timed_calls": len(timing.seconds)}


def run_infer_bench(cfg: InferBenchConfig, command: str | None = None, on_row=None) -> dict[str, Any]:
    """Check, then time every system over all pairs; returns {"env", "config", "checks", "rows", "skipped"}."""
    device = torch.device(cfg.device)
    if "graphed" in cfg.modes and device.type != "cuda":
        raise UsageError(f"--modes graphed: CUDA graphs need a CUDA device, got --device {cfg.device}")
    dtype = autocast_dtype(cfg.dtype, device)
    texts = load_text_pairs(cfg.candidates, cfg.depth) if cfg.candidates else None
    result = new_result("infer", cfg, device, command,
                        workload=(f"{len(texts)} pairs of {cfg.candidates} (top {cfg.depth})" if texts
                                  else f"{cfg.pairs} MS MARCO-shaped random-id pairs"))

    def add(row):
        result["rows"].append(row)
        logger.info("%s %s %s: %.0f pairs/s, %.0f real tok/s, %.2f GiB", row["backbone"], row["impl"], row["mode"],
                    row["pairs_per_s"], row["real_tokens_per_s"], row["peak_memory_gib"])
        if on_row is not None:
            on_row(result)

    for name in cfg.backbones:
        model, info = build_model(name, init=cfg.init, tokenizer=cfg.tokenizer, seed=cfg.seed)
        if texts is not None and not info["texts_ok"]:
            raise UsageError(f"--candidates needs a real tokenizer for {name}: pass --tokenizer")
        model.to(device).eval()
        if not ours_passes(name, model, device, dtype, cfg.seed, result):
            continue
        if texts is not None:
            add(_end_to_end_ours(name, model, texts, cfg, device, dtype))
        for kind in [*cfg.modes, *cfg.anchors]:  # sentence-transformers' row: below, on texts
            if kind == "graphed":
                try:
                    check_graphable(model, device, dtype, "--modes graphed")
                except ModelConfigError as e:  # this backbone only: the others' rows go on
                    result["skipped"].append({"system": f"{name} ours graphed", "reason": str(e)})
                    continue
            system = checked_system(kind, name, model, device, cfg.seed, result)
            if system is None:
                continue
            if system.mode == "graphed":
                result["checks"].append(check_graphed(system, model, device, dtype, cfg.seed))
                if not result["checks"][-1]["ok"]:
                    logger.error("%s: correctness check failed, not timed: %s", system.label, result["checks"][-1])
                    result["skipped"].append({"system": system.label, "reason": "correctness check failed"})
                    continue
            batches = _id_batches(model, texts, cfg, padded=system.mode == "padded", graphed=system.mode == "graphed")
            if system.mode == "graphed":  # padded to their buckets on the host, as the Reranker does, untimed
                batches = [system.forward.pad(b) for b in batches]
            batches = [b.to(device) for b in batches]
            n_pairs = sum(b.num_real_sequences for b in batches)
            tokens = sum(b.num_real_tokens for b in batches)

            def one_pass(_i, system=system, batches=batches):
                for b in batches:
                    infer_scores(system, b, dtype)
            try:
                timing = time_calls(one_pass, device, cfg.warmup, cfg.repeats)
            except torch.OutOfMemoryError:
                timing = None
                result["skipped"].append({"system": system.label, "reason": "out of memory"})
                release(device)
            if timing is not None:
                add(_row({"backbone": name, "impl": system.impl, "mode": system.mode}, n_pairs, tokens, timing,
                         "model"))
            put_back(system, model, device)
            del system, batches
            release(device)
        if "sentence-transformers" in cfg.anchors:
            _sentence_transformers_row(name, model, texts, cfg, device, dtype, result, add)
        del model
        release(device)
    return result


def _end_to_end_ours(name, model, texts, cfg: InferBenchConfig, device, dtype) -> dict[str, Any]:
    """``Reranker.score_pairs`` over all pairs: tokenisation, packing, scoring, scores back on the host."""
    from rerankers.reranker import Reranker

    reranker = Reranker(model, device=device, dtype=dtype or "float32", batch_tokens=cfg.batch_tokens)
    timing = time_calls(lambda _i: reranker.score_pairs(texts.queries, texts.docs), device, cfg.warmup, cfg.repeats)
    st = reranker.last_stats
    row = _row({"backbone": name, "impl": "ours", "mode": "packed"}, len(texts), st.tokens, timing, "end-to-end")
    row["model_only_pairs_per_s"] = st.model_pairs_per_s
    return row


def _sentence_transformers_row(name, model, texts, cfg: InferBenchConfig, device, dtype, result, add) -> None:
    if texts is None:
        result["skipped"].append({"system": f"{name} sentence-transformers",
                                  "reason": "predict() takes texts: pass --candidates"})
        return
    try:
        st = anchor_mod.SentenceTransformersPredict(name, model, device, cfg.st_batch_size)
    except anchor_mod.NotApplicable:
        return
    except anchor_mod.AnchorUnavailable as e:
        result["skipped"].append({"system": f"{name} sentence-transformers", "reason": str(e)})
        return
    # the check: the same scores as ours, both fp32, on the first pairs (predict's own activation undone)
    ours = Ours(name, "packed", model)
    enc = model.encode(texts.queries[:16], texts.docs[:16], warn=False)
    ref = infer_scores(ours, pack_encoded(enc, list(range(len(enc.input_ids)))).to(device), None).float().cpu()
    theirs = torch.as_tensor(st.st.predict(list(zip(texts.queries[:16], texts.docs[:16])), activation_fn=
                                           torch.nn.Identity(), convert_to_numpy=True, show_progress_bar=False))
    from rerankers.bench.checks import FP32_TOL, rel_err
    err = rel_err(theirs.float(), ref)
    result["checks"].append({"backbone": name, "system": f"{name} sentence-transformers", "vs_ours": err,
                             "ok": err < FP32_TOL})
    if not result["checks"][-1]["ok"]:
        result["skipped"].append({"system": f"{name} sentence-transformers", "reason": "correctness check failed"})
        return
    timing = time_calls(lambda _i, st=st: st.predict(texts.queries, texts.docs, autocast=dtype), device,
                        cfg.warmup, cfg.repeats)
    tokens = sum(len(x) for x in model.encode(texts.queries, texts.docs, warn=False).input_ids)
    add(_row({"backbone": name, "impl": "sentence-transformers", "mode": f"padded (batch {cfg.st_batch_size})"},
             len(texts), tokens, timing, "end-to-end"))

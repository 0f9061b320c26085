"""``rerank bench profile``: where a training step's (or an inference call's) time goes, by operator class.

torch.profiler over ``steps`` training steps (``step="infer"``: scoring calls, no gradient) after ``warmup``,
of each system (ours in each of ``modes``, then the anchors); on CUDA the GPU time
of every kernel (self device time), on the CPU the self time of every operator, each put in one
class by its name (:data:`CLASSES`, first match wins; the order matters: the optimizer's
multi-tensor kernels before element-wise work, the scan before anything named ``*scan*`` elsewhere).
Batches: ``pairs`` MS MARCO-shaped random pairs, or with ``length`` ``pairs`` sequences of exactly that many
tokens (the scaling sweep's shape, where padding costs the anchors nothing; BERT-family models then get
``max_position_embeddings`` = length). The result: per system, milliseconds per step and share of each
class, the top kernels, and the wall time of a step timed outside the profiler (back to back, the mean): the
kernels' total over it is the share of the step the GPU is busy (low: the host is the bottleneck, launches
and Python between kernels). With ``host`` = N, the same steps again under cProfile: the N Python functions with
the most self time (where a host-bound step's CPU goes: kernel launchers, autograd, custom-op dispatch).
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from rerankers.bench import anchors as anchor_mod
from rerankers.bench.build import build_model
from rerankers.bench.scaling import positions_for
from rerankers.bench.systems import Ours, TrainStep, infer_scores
from rerankers.bench.timing import new_result, release, synchronize, time_calls
from rerankers.bench.train import autocast_dtype
from rerankers.bench.workload import model_workload, random_batch, synthetic_batches

logger = logging.getLogger(__name__)

CLASSES: tuple[tuple[str, re.Pattern], ...] = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in (
    ("optimizer", r"adam|multi_tensor|foreach|clip_grad|_amp_"),
    ("selective scan", r"scan"),
    ("conv1d", r"conv1d|conv_fwd|conv_bwd|_conv_"),
    ("attention", r"flash|fmha|attention|attn|sdpa|cutlassF|cutlassB"),
    ("matmul", r"gemm|xmma|nvjet|cutlass|cublas|wgmma|sm90_|sm80_|aten::mm\b|addmm|bmm|matmul"),
    ("norm", r"norm"),
    ("copies and fills", r"memcpy|memset|copy_|fill|cat_|CatArray|aten::copy|aten::cat|aten::zero"),
    ("element-wise", r"elementwise|vectorized|unrolled|reduce|index|gather|scatter|softmax|embedding|triton|aten::"),
))
OTHER = "other"


def classify(name: str) -> str:
    """The operator class of a kernel or operator name."""
    return next((cls for cls, pattern in CLASSES if pattern.search(name)), OTHER)


@dataclass
class ProfileBenchConfig:
    backbones: Sequence[str] = ("mamba-130m", "bert-base")
    anchors: Sequence[str] = ()
    pairs: int = 256
    group_size: int = 8
    warmup: int = 3
    steps: int = 3
    top: int = 15
    device: str = "cuda"
    dtype: str = "bfloat16"
    tokenizer: str | None = None
    seed: int = 0
    step: str = "train"  # or "infer": scoring calls under no_grad
    modes: Sequence[str] = ("packed",)
    length: int | None = None  # equal-length sequences of this many tokens instead of MS MARCO-shaped pairs
    host: int = 0  # > 0: also the steps under cProfile, the Python functions with the most self time (host time)


STEPS = ("train", "infer")  # what a profiled step is: a training step, or a scoring call without gradients


def _breakdown(prof, device: torch.device, steps: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(ms per step by class, top kernels) from a finished profiler."""
    from torch.autograd import DeviceType

    by_class: dict[str, float] = defaultdict(float)
    kernels = []
    for e in prof.key_averages():
        if device.type == "cuda":
            if e.device_type != DeviceType.CUDA:
                continue
            us = e.self_device_time_total
        else:
            if e.key.startswith("ProfilerStep"):
                continue
            us = e.self_cpu_time_total
        if us <= 0:
            continue
        cls = classify(e.key)
        by_class[cls] += us / 1e3 / steps
        kernels.append({"name": e.key[:120], "class": cls, "ms_per_step": us / 1e3 / steps, "calls": e.count // steps})
    kernels.sort(key=lambda k: -k["ms_per_step"])
    return dict(by_class), kernels


def _host_top(call, batches, steps: int, device: torch.device, top: int) -> list[dict[str, Any]]:
    """The Python functions with the most self time over ``steps`` calls (cProfile; the launch paths of kernels,
    autograd, our wrappers): what a host-bound step spends its CPU on, ms per step. cProfile slows the
    calls it watches, so these are shares of host work, not the step's wall time."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for i in range(steps):
        call(batches[i % 2])
    synchronize(device)
    prof.disable()
    rows = []
    for (file, line, func), (_, calls, tottime, cumtime, _) in pstats.Stats(prof).stats.items():
        where = func if file == "~" else f"{'/'.join(Path(file).parts[-2:])}:{line}({func})"
        rows.append({"function": where, "self_ms_per_step": tottime * 1e3 / steps,
                     "cum_ms_per_step": cumtime * 1e3 / steps, "calls": calls // steps})
    rows.sort(key=lambda r: -r["self_ms_per_step"])
    return rows[:top]


def _step_of(system, step: str, device: torch.device, group_size: int, dtype):
    """What one profiled step calls on a batch: the training step, or a scoring call without gradients."""
    if step == "train":
        return TrainStep(system, device, group_size, autocast=dtype)
    return lambda batch: infer_scores(system, batch, dtype)


def run_profile_bench(cfg: ProfileBenchConfig, command: str | None = None, on_row=None) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(cfg.device)
    dtype = autocast_dtype(cfg.dtype, device)
    result = new_result("profile", cfg, device, command, classes=[c for c, _ in CLASSES] + [OTHER])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for name in cfg.backbones:
        shape = positions_for(name, cfg.length) if cfg.length else None
        model, _ = build_model(name, init="random", tokenizer=cfg.tokenizer, shape=shape or None, seed=cfg.seed)
        model.to(device)
        work = model_workload(model)
        if cfg.length:
            gen = torch.Generator().manual_seed(cfg.seed)
            batches = [random_batch([cfg.length] * cfg.pairs, work["vocab_size"], gen,
                                    token_types=work["token_types"]).to(device) for _ in range(2)]
        else:
            batches = [b.to(device) for b in synthetic_batches(cfg.pairs, 2, seed=cfg.seed, **work)]
        systems = [Ours(name, mode, model) for mode in cfg.modes]
        for kind in cfg.anchors:
            anchor = anchor_mod.try_anchor(kind, name, model, result["skipped"])
            if anchor is not None:
                systems.append(anchor)
                anchor.module.to(device)
        for system in systems:
            call = _step_of(system, cfg.step, device, cfg.group_size, dtype)
            for i in range(cfg.warmup):
                call(batches[i % 2])
            wall = time_calls(lambda i, call=call: call(batches[i % 2]), device, 0, cfg.steps)
            synchronize(device)
            with profile(activities=activities) as prof:
                for i in range(cfg.steps):
                    call(batches[i % 2])
                synchronize(device)
            by_class, kernels = _breakdown(prof, device, cfg.steps)
            total = sum(by_class.values()) or float("nan")
            row = {"backbone": name, "impl": system.impl, "mode": system.mode, "pairs": cfg.pairs, "step": cfg.step,
                   "length": cfg.length,
                   "real_tokens": round(sum(b.num_tokens for b in batches) / 2), "total_ms_per_step": total,
                   "wall_ms_per_step": wall.step_s * 1e3,
                   "busy": total / (wall.step_s * 1e3) if device.type == "cuda" else None,
                   "time": "GPU kernel time" if device.type == "cuda" else "CPU operator self time",
                   "ms_per_step": by_class, "share": {k: v / total for k, v in by_class.items()},
                   "top": kernels[:cfg.top]}
            if cfg.host:
                row["host_top"] = _host_top(call, batches, cfg.steps, device, cfg.host)
            result["rows"].append(row)
            logger.info("%s: %.1f ms per step; %s", system.label, total,
                        ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])))
            del call
            system.module.zero_grad(set_to_none=True)
            release(device)
            if on_row is not None:
                on_row(result)
        del systems, model
        release(device)
    return result

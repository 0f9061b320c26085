"""What a user watches while a run trains: step timings, throughput, MFU, memory, the JSONL log.

Throughput is measured like llm.c: each step is timed with device synchronisation, the first
``warmup`` steps are dropped, and the report gives the median of the rest. Tokens are the real
(unpadded) tokens of the packed batches, summed over all processes. MFU is the matmul work of a
training step (6 x non-embedding parameters per token) over the card's dense bf16 peak; it is
left out (None) where the card is not in :data:`PEAK_BF16_FLOPS`.
"""
from __future__ import annotations

import json
import logging
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

# dense bf16 tensor-core peaks (FLOP/s) by a substring of torch.cuda.get_device_name()
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def device_name(device: torch.device) -> str:
    """The card (``NVIDIA H200``) or the CPU, for reports."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """{"total", "non_embedding"} parameter counts (a tied embedding counted once)."""
    embedding = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "non_embedding": total - sum(p.numel() for p in model.parameters() if id(p) in embedding)}


def training_flops_per_token(model: nn.Module) -> float:
    """6 x the non-embedding parameters: forward + backward matmul work per token."""
    return 6.0 * count_parameters(model)["non_embedding"]


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated GPU memory, or the process's peak resident memory on the CPU, in GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


@dataclass
class StepTimer:
    """Per-step seconds, tokens and pairs; :meth:`summary` gives medians after the warm-up steps."""

    device: torch.device
    flops_per_token: float
    warmup: int = 2
    seconds: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    pairs: list[float] = field(default_factory=list)
    _t0: float = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self._t0 = time.perf_counter()

    def stop(self, tokens: float, pairs: float) -> float:
        self._sync()
        dt = time.perf_counter() - self._t0
        self.seconds.append(dt)
        self.tokens.append(tokens)
        self.pairs.append(pairs)
        return dt

    def rates(self, last: int | None = None) -> dict[str, float | None]:
        """tokens/s, pairs/s and MFU over the last ``last`` steps (all where None)."""
        sl = slice(-last, None) if last else slice(None)
        secs = sum(self.seconds[sl]) or float("nan")
        tok_s = sum(self.tokens[sl]) / secs
        peak = peak_flops(self.device)
        return {"tokens_per_s": tok_s, "pairs_per_s": sum(self.pairs[sl]) / secs,
                "mfu": tok_s * self.flops_per_token / peak if peak else None}

    def summary(self) -> dict[str, Any]:
        """Median step time and rates over the steps after the warm-up (all steps if there are too few)."""
        keep = slice(self.warmup, None) if len(self.seconds) > self.warmup + 2 else slice(None)
        secs, toks, prs = self.seconds[keep], self.tokens[keep], self.pairs[keep]
        if not secs:
            return {}
        per_step = [t / s for t, s in zip(toks, secs)]
        tok_s = statistics.median(per_step)
        peak = peak_flops(self.device)
        return {"steps_timed": len(secs), "warmup_steps_dropped": len(self.seconds) - len(secs),
                "median_step_s": statistics.median(secs), "tokens_per_s": tok_s,
                "pairs_per_s": statistics.median([p / s for p, s in zip(prs, secs)]),
                "mfu": tok_s * self.flops_per_token / peak if peak else None,
                "peak_memory_gib": peak_memory_gib(self.device), "card": device_name(self.device),
                "total_train_seconds": sum(self.seconds)}


class JsonlLog:
    """``OUT/train_log.jsonl``: one JSON object per logging step (the main process writes it)."""

    def __init__(self, path: Path, keep_lines: int | None = None):
        self.path = path
        if keep_lines is not None and path.is_file():  # resume: drop what was logged after the checkpoint
            from rerankers.utils.io import atomic_write

            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)[:keep_lines]
            with atomic_write(path) as f:
                f.writelines(lines)
        elif keep_lines is None and path.exists():
            path.unlink()
        self.lines = keep_lines or 0

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.lines += 1

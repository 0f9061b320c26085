"""What a user watches while a run trains: step timings, throughput, MFU, memory, the JSONL log.

Throughput is measured like llm.c (the first ``warmup`` steps dropped), but without a synchronisation
inside the run: :class:`StepClock` puts a CUDA event on the stream at every step's end, and a step's
time is the distance between its end and the previous step's end on the GPU's clock. The host may then
queue step k+1 while the GPU still runs step k (a synchronising step would serialise the two); what a
step costs includes the time the GPU waited for the host. One step's time depends on how far the host
ran ahead in the step before, so the rate is the timed steps' tokens over their summed time. Tokens
are the real (unpadded) tokens of the packed batches, summed over all processes. MFU is the matmul
work of a training step (6 x non-embedding parameters per token) over the card's dense bf16 peak; it
is left out (None) where the card is not in :data:`PEAK_BF16_FLOPS`.
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


class StepClock:
    """Seconds of consecutive steps without making the host wait inside them.

    On CUDA every mark is an event recorded on the current stream (the GPU's clock); on the CPU, where
    every op finishes before the call returns, ``time.perf_counter()``. :meth:`restart` marks the start of
    a run of steps (at the beginning, and after anything between steps that is not a step: an
    evaluation, a checkpoint); :meth:`lap` marks a step's end and returns the (start, end) marks of the
    step, which :meth:`seconds` turns into seconds (waiting for the end mark only).
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._last: Any = None

    def _mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))  # the device's stream, not the current device's
            return event
        return time.perf_counter()

    def restart(self) -> None:
        self._last = self._mark()

    def lap(self) -> tuple[Any, Any]:
        if self._last is None:
            raise RuntimeError("StepClock.lap() before restart()")
        end = self._mark()
        lap, self._last = (self._last, end), end
        return lap

    @staticmethod
    def seconds(lap: tuple[Any, Any]) -> float:
        start, end = lap
        if isinstance(end, float):
            return end - start
        end.synchronize()
        return start.elapsed_time(end) / 1e3


@dataclass
class StepTimer:
    """Per-step seconds, tokens and pairs (:class:`StepClock` laps); :meth:`summary` gives the rates over the steps
    after the warm-up (their tokens over their summed time). ``restart()`` before the first step and after every
    pause; ``lap()`` at each step's end; ``record(lap, tokens, pairs)`` once the step's numbers are known (in step
    order)."""

    device: torch.device
    flops_per_token: float
    warmup: int = 2
    seconds: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    pairs: list[float] = field(default_factory=list)
    clock: StepClock | None = None

    def __post_init__(self) -> None:
        self.clock = self.clock or StepClock(self.device)

    def restart(self) -> None:
        self.clock.restart()

    def lap(self) -> tuple[Any, Any]:
        return self.clock.lap()

    def record(self, lap: tuple[Any, Any], tokens: float, pairs: float) -> float:
        dt = self.clock.seconds(lap)
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
        """Step times and rates over the steps after the warm-up (all steps if there are too few)."""
        keep = slice(self.warmup, None) if len(self.seconds) > self.warmup + 2 else slice(None)
        secs, toks, prs = self.seconds[keep], self.tokens[keep], self.pairs[keep]
        if not secs:
            return {}
        tok_s = sum(toks) / sum(secs)
        peak = peak_flops(self.device)
        return {"steps_timed": len(secs), "warmup_steps_dropped": len(self.seconds) - len(secs),
                "median_step_s": statistics.median(secs), "mean_step_s": sum(secs) / len(secs), "tokens_per_s": tok_s,
                "pairs_per_s": sum(prs) / sum(secs),
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

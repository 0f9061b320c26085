"""Timing and the environment of a measurement: calls back to back on the GPU's clock, warm-up dropped, the
timed span over the calls (:attr:`Timing.step_s`)."""
from __future__ import annotations

import contextlib
import datetime
import importlib
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from rerankers.train.progress import StepClock, device_name, peak_memory_gib


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def release(device: torch.device) -> None:
    """Free cached blocks between systems, so one system's cache never counts in the next one's peak."""
    import gc
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class Timing:
    """Seconds of each timed call (warm-up calls dropped), the peak memory over all of them, and how they were
    timed: ``pipelined`` (back to back, each call the distance between its end and the previous call's end on the
    GPU's clock) or synchronised around each call (``RERANKERS_TIMING=synced``; always on the CPU)."""

    seconds: list[float]
    warmup: int
    peak_memory_gib: float
    pipelined: bool = False

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def mean_s(self) -> float:
        return sum(self.seconds) / len(self.seconds)

    @property
    def step_s(self) -> float:
        """A call's time: the mean where calls were pipelined (the timed span over the calls: one call's lap
        depends on how far the host ran ahead in the one before, so only their sum is a rate), else the median."""
        return self.mean_s if self.pipelined else self.median_s

    @property
    def spread(self) -> float:
        """(max - min) / median of the timed calls: how steady the card was (pipelined laps also vary with how far
        the host ran ahead; their mean, :attr:`step_s`, does not)."""
        return (max(self.seconds) - min(self.seconds)) / self.median_s if self.median_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_s * 1e3, "mean_ms": self.mean_s * 1e3, "min_ms": min(self.seconds) * 1e3,
                "max_ms": max(self.seconds) * 1e3, "timed_calls": len(self.seconds),
                "warmup_calls": self.warmup, "peak_memory_gib": self.peak_memory_gib, "pipelined": self.pipelined}


TIMING_ENV = "RERANKERS_TIMING"  # "synced": synchronise around every timed call (the timing before the ninth session)


def time_calls(fn: Callable[[int], Any], device: torch.device, warmup: int, repeats: int) -> Timing:
    """Call ``fn(i)`` ``warmup`` times untimed, synchronise, then ``repeats`` times back to back; each call's
    time is the distance between its end and the previous call's end on the GPU's clock
    (:class:`rerankers.train.progress.StepClock`: no synchronisation between calls, so that the host may
    queue call i+1 while the GPU runs call i, as in a training run). ``RERANKERS_TIMING=synced``: a
    synchronisation before and after each call instead. The peak memory is reset before the first call.
    ``repeats`` >= 1."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"time_calls: repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    how = os.environ.get(TIMING_ENV) or "pipelined"
    if how not in ("pipelined", "synced"):
        raise ValueError(f"{TIMING_ENV}={how}: pipelined (the default) or synced")
    pipelined = device.type == "cuda" and how == "pipelined"
    reset_peak_memory(device)
    for i in range(warmup):
        fn(i)
    synchronize(device)
    clock = StepClock(device if pipelined else torch.device("cpu"))
    laps = []
    clock.restart()
    for i in range(warmup, warmup + repeats):
        if not pipelined:
            synchronize(device)
            clock.restart()
        fn(i)
        if not pipelined:
            synchronize(device)
        laps.append(clock.lap())
    synchronize(device)
    return Timing([clock.seconds(lap) for lap in laps], warmup, peak_memory_gib(device), pipelined)


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception:  # noqa: BLE001 - an optional package may fail to import in many ways
        return None


COMMIT_ENV = "RERANKERS_COMMIT"  # the commit to stamp where the checkout's git metadata is absent or stale (copies)


def _git_commit() -> str | None:
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    root = Path(__file__).resolve().parents[2]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("+dirty" if dirty else "")
    return None


def environment(device: torch.device, command: str | None = None) -> dict[str, Any]:
    """The card, the software versions, the commit and the command of a measurement."""
    env: dict[str, Any] = {
        "card": device_name(device), "device": str(device),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "commit": _git_commit(), "command": command or " ".join(["rerank", *sys.argv[1:]]),
    }
    for module in ("triton", "transformers", "mamba_ssm", "causal_conv1d", "sentence_transformers"):
        env[module] = _version(module)
    # switches read from the environment that change what is measured (rerankers.kernels.selective_scan.op)
    env["RERANKERS_SCAN_RECOMPUTE"] = os.environ.get("RERANKERS_SCAN_RECOMPUTE")
    env[TIMING_ENV] = os.environ.get(TIMING_ENV)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["sm_count"] = props.multi_processor_count
        env["memory_gib"] = round(props.total_memory / 2**30, 1)
    return env


def new_result(mode: str, cfg, device: torch.device, command: str | None, **extra: Any) -> dict[str, Any]:
    """The result of a bench mode before its first row: the mode, the environment, the settings (a
    dataclass config, sequences as lists), ``extra`` fields, and empty checks / rows / skipped lists."""
    config = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in vars(cfg).items()}
    return {"mode": mode, "env": environment(device, command), "config": config, **extra,
            "checks": [], "rows": [], "skipped": []}

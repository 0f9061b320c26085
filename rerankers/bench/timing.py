"""Timing and the environment of a measurement: synchronised calls, warm-up dropped, median of the rest."""
from __future__ import annotations

import contextlib
import datetime
import importlib
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from rerankers.train.progress import device_name, peak_memory_gib


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
    """Seconds of each timed call (warm-up calls dropped) and the peak memory over all of them."""

    seconds: list[float]
    warmup: int
    peak_memory_gib: float

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median of the timed calls: how steady the card was."""
        return (max(self.seconds) - min(self.seconds)) / self.median_s if self.median_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_s * 1e3, "min_ms": min(self.seconds) * 1e3,
                "max_ms": max(self.seconds) * 1e3, "timed_calls": len(self.seconds),
                "warmup_calls": self.warmup, "peak_memory_gib": self.peak_memory_gib}


def time_calls(fn: Callable[[int], Any], device: torch.device, warmup: int, repeats: int) -> Timing:
    """Call ``fn(i)`` ``warmup`` times untimed, then ``repeats`` times, each timed between two
    synchronisations; the peak memory is reset before the first call. ``repeats`` >= 1."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"time_calls: repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    reset_peak_memory(device)
    for i in range(warmup):
        fn(i)
    synchronize(device)
    seconds = []
    for i in range(warmup, warmup + repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn(i)
        synchronize(device)
        seconds.append(time.perf_counter() - t0)
    return Timing(seconds, warmup, peak_memory_gib(device))


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

"""The one entry of ``rerank bench MODE``: check the output folder, run the mode, write its files as each
row arrives (a later failure loses nothing), then the plots.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch

from rerankers.errors import UsageError
from rerankers.utils.io import check_writable_dir

logger = logging.getLogger(__name__)


def _modes():
    from rerankers.bench.infer import InferBenchConfig, run_infer_bench
    from rerankers.bench.profile import ProfileBenchConfig, run_profile_bench
    from rerankers.bench.scaling import ScalingBenchConfig, run_scaling_bench
    from rerankers.bench.train import TrainBenchConfig, run_train_bench
    return {"train": (TrainBenchConfig, run_train_bench), "infer": (InferBenchConfig, run_infer_bench),
            "scaling": (ScalingBenchConfig, run_scaling_bench), "profile": (ProfileBenchConfig, run_profile_bench)}


BENCH_MODES = ("train", "infer", "scaling", "profile")


def _check_options(mode: str, cfg) -> None:
    from rerankers.bench.anchors import ANCHORS
    from rerankers.bench.profile import STEPS
    from rerankers.bench.workload import MODES
    from rerankers.train.config import COMPILE_MODES

    for field in ("warmup", "steps", "repeats", "single_steps"):
        value = getattr(cfg, field, None)
        if value is not None and (value < (0 if field == "warmup" else 1)):
            raise UsageError(f"--{field.replace('_', '-')} {value}: must be {'>= 0' if field == 'warmup' else '>= 1'}")
    for a in getattr(cfg, "anchors", ()):
        if a not in ANCHORS:
            raise UsageError(f"--anchors {a}: one of {', '.join(ANCHORS)}, 'all' or 'none'")
    for m in getattr(cfg, "modes", ()):
        if m not in MODES:
            raise UsageError(f"--modes {m}: one of {', '.join(MODES)}")
        if m == "static" and mode != "train":
            raise UsageError("--modes static: rerank bench train only (a training step of one fixed shape)")
        if m == "recompute" and mode != "train":
            raise UsageError("--modes recompute: rerank bench train only (what the backward keeps)")
        if m == "graphed" and mode != "infer":
            raise UsageError("--modes graphed: rerank bench infer only (a forward replayed from CUDA graphs)")
    if getattr(cfg, "step", "train") not in STEPS:
        raise UsageError(f"--step {cfg.step}: {' or '.join(STEPS)}")
    if getattr(cfg, "compile", "off") not in COMPILE_MODES:
        raise UsageError(f"--compile {cfg.compile}: one of {', '.join(COMPILE_MODES)}")
    if getattr(cfg, "compile", "off") == "cuda-graphs" and (mode != "train" or "static" not in cfg.modes):
        raise UsageError("--compile cuda-graphs: rerank bench train with --modes static (graphs replay one shape)")
    if getattr(cfg, "host", 0) < 0:
        raise UsageError(f"--host {cfg.host}: the number of functions listed (0: none)")
    if getattr(cfg, "length", None) is not None and cfg.length < 2:
        raise UsageError(f"--length {cfg.length}: a sequence holds at least a query and a document token (>= 2)")
    if getattr(cfg, "static_tokens", None) is not None and cfg.static_tokens < 2:
        raise UsageError(f"--static-tokens {cfg.static_tokens}: must hold a pair and a padding token (>= 2)")
    for field in ("pairs", "batch_tokens", "budget_tokens", "st_batch_size", "depth", "group_size", "top", "lora",
                  "qlora"):
        value = getattr(cfg, field, None)
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if v is not None and v < 1:
                raise UsageError(f"--{field.replace('_', '-')} {v}: must be positive")
    if getattr(cfg, "lora", ()) or getattr(cfg, "qlora", ()):
        from rerankers.train.lora import require_bitsandbytes, require_peft
        require_peft()  # before any work, not after the full fine-tuning rows
        if cfg.qlora:
            require_bitsandbytes()
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {cfg.device}: CUDA is not available here (--device cpu for a smoke run)")
    if getattr(cfg, "candidates", None) and not Path(cfg.candidates).is_file():
        raise UsageError(f"--candidates {cfg.candidates}: no such file")


def run_bench(mode: str, out: str | os.PathLike, *, plots: bool = True, command: str | None = None,
              **options: Any) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run ``rerank bench mode`` with ``options`` (fields of the mode's config dataclass; None = default).
    Returns (result, paths written)."""
    from rerankers.bench.report import write_outputs

    if mode not in BENCH_MODES:
        raise UsageError(f"rerank bench: mode must be one of {', '.join(BENCH_MODES)}, got {mode!r}")
    config_cls, runner = _modes()[mode]
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(k for k, v in options.items() if v is not None and k not in names)
    if unknown:
        raise UsageError(f"rerank bench {mode}: no option {', '.join('--' + u.replace('_', '-') for u in unknown)}")
    if options.get("device") is None:
        options["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if options.get("dtype") in (None, "auto"):
        options["dtype"] = "bfloat16" if str(options["device"]).startswith("cuda") else "float32"
    cfg = config_cls(**{k: v for k, v in options.items() if v is not None and k in names})
    _check_options(mode, cfg)
    check_writable_dir(out)
    if not str(cfg.device).startswith("cuda"):
        logger.warning("rerank bench on %s: a smoke run of the harness, not a measurement", cfg.device)
    partial: dict[str, Any] = {}

    def on_row(res: dict[str, Any]) -> None:
        partial["result"] = res
        write_outputs(res, out, plots=False)

    try:
        result = runner(cfg, command=command, on_row=on_row)
    except KeyboardInterrupt:  # a time box or ^C: what was measured stays, marked as cut short
        if "result" not in partial:
            raise
        result = partial["result"]
        result["interrupted"] = f"stopped after {len(result['rows'])} rows; the systems after the last row were not run"
        logger.warning("rerank bench %s interrupted: %s", mode, result["interrupted"])
    return result, write_outputs(result, out, plots=plots)

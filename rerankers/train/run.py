"""The ``rerank train`` workflow: settings from flags, a config file or a run to resume; plan; train.

The CLI parses flags and calls these with keyword arguments; they are the library's entry points
for scripts too::

    from rerankers.train import resolve_training_config, run_training
    cfg = resolve_training_config(config="experiments/offline/minilm-lce.yaml", overrides={"out": "runs/x"})
    result = run_training(cfg)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from rerankers.train.config import TrainConfig, resolve_config

logger = logging.getLogger(__name__)


def resolve_training_config(*, config: str | None = None, resume: str | None = None,
                            overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Defaults < ``config`` file < ``overrides``; with ``resume``, the run's saved settings (only flags that
    do not change its trajectory may differ: a ResumeMismatchError names any other)."""
    from rerankers.errors import UsageError

    overrides = dict(overrides or {})
    if resume is not None:
        if config is not None:
            raise UsageError("--resume continues a run with its saved settings; drop --config")
        from rerankers.train.loop import resolve_resume
        overrides.setdefault("out", resume)
        if Path(overrides["out"]) != Path(resume):
            raise UsageError(f"--resume {resume} writes into its own folder; drop --out {overrides['out']}")
        return resolve_resume(resume, overrides)
    return resolve_config(config, overrides)


def plan_training(cfg: TrainConfig, resume: bool = False) -> str:
    """Check every path (data read, output writable, backbone resolvable) and describe the run; trains nothing."""
    from rerankers.models.presets import resolve
    from rerankers.train.dev_eval import load_dev_set
    from rerankers.train.loop import load_data
    from rerankers.train.losses import build_loss
    from rerankers.train.sampler import GroupSampler
    from rerankers.utils.io import check_writable_dir

    check_writable_dir(Path(cfg.out))
    loss = build_loss(cfg.loss, **cfg.loss_args)
    queries = load_data(cfg, needs_teacher=getattr(loss, "needs_teacher", False))
    sampler = GroupSampler(queries, cfg.group_size, cfg.queries_per_step, cfg.seed)
    total = sampler.total_steps(cfg.epochs, cfg.max_steps)
    if cfg.init == "pretrained":
        folder, _ = resolve(cfg.backbone)
        where = str(folder)
    else:
        where = "random weights of its shape"
    dev = "none"
    if cfg.eval_candidates:
        d = load_dev_set(cfg.eval_candidates, cfg.eval_qrels, cfg.eval_metric)
        dev = f"{cfg.eval_candidates}: {len(d.run)} queries, top {cfg.eval_depth}, every {cfg.eval_every or 'end'}"
    lines = [
        f"backbone      {cfg.backbone} ({where}){', LoRA r=' + str(cfg.lora) if cfg.lora else ''}",
        f"data          {len(queries)} usable queries from {', '.join(cfg.train)}",
        f"steps         {total} ({sampler.steps_per_epoch}/epoch) of {cfg.queries_per_step} groups x "
        f"{cfg.group_size} documents, micro-batches "
        + (f"padded to exactly {cfg.static_tokens} tokens" if cfg.static_tokens
           else f"<= {cfg.micro_batch_tokens} tokens")
        + {"off": "", "cuda-graphs": ", forward + backward replayed from CUDA graphs"}.get(
            cfg.compile, f", torch.compile {cfg.compile}"),
        f"objective     {cfg.loss} {cfg.loss_args or ''}".rstrip(),
        f"optimizer     AdamW lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, warmup {cfg.warmup_steps}, "
        f"{cfg.schedule}, clip {cfg.max_grad_norm}",
        f"dev           {dev}",
        f"output        {cfg.out}{' (resume)' if resume else ''}; checkpoints every {cfg.save_every or '-'}",
    ]
    return "\n".join(lines) + "\n"


def run_training(cfg: TrainConfig, resume: bool = False):
    """Train; returns :class:`rerankers.train.loop.TrainResult` (its ``summary()`` is what the CLI prints)."""
    from rerankers.train.loop import train

    return train(cfg, resume=resume)

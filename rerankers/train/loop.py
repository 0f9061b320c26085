"""The training loop of ``rerank train``: packed groups -> loss -> AdamW, with exact resume.

Read bottom-up: :func:`train` prepares the run (settings, data, model, optimizer, resume) and
calls :func:`_run_steps`; each optimizer step draws its groups from the sampler, packs them into
micro-batches of whole groups (:mod:`rerankers.train.batches`), accumulates the loss of every
micro-batch (scaled by ``1 / groups in the step`` so that micro-batching and process count do
not change the gradient), sums gradients over processes, clips, steps, logs, evaluates and saves.
Nothing inside a step makes the host wait for the GPU (:mod:`rerankers.train.guard`): step k's loss and
gradient norm are read once step k+1 is queued, and a NaN / inf step is skipped on the device.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch

from rerankers.data.packing import StaticShape
from rerankers.errors import ModelConfigError, NonFiniteLossError, TrainingConfigError, UsageError
from rerankers.train import checkpoint as ckpt
from rerankers.train.batches import micro_batches, static_shape_for
from rerankers.train.compile import training_forward
from rerankers.train.config import TrainConfig, check_config, load_saved_config, merge_resume, save_config
from rerankers.train.dev_eval import DevSet, evaluate_dev, load_dev_set
from rerankers.train.distributed import (
    ProcessInfo,
    barrier,
    broadcast_object,
    init_processes,
    shutdown,
    sum_gradients,
    sum_tensor,
)
from rerankers.train.guard import guarded_step
from rerankers.train.lora import is_lora, merged_copy, save_lora_state
from rerankers.train.optim import build_optimizer, build_scheduler
from rerankers.train.progress import (
    JsonlLog,
    StepTimer,
    count_parameters,
    device_name,
    peak_memory_gib,
    training_flops_per_token,
)
from rerankers.train.sampler import GroupSampler, usable_queries
from rerankers.utils.device import ReadBack, to_device
from rerankers.utils.io import atomic_write, check_writable_dir, publish_folder
from rerankers.utils.progress import progress_bar

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run produced: the final model folder, the report (also in train_report.json)."""

    model_dir: Path
    report: dict[str, Any]
    steps: int
    final_loss: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines: the model folder, the dev metrics (final and best), the training throughput."""
        q, t = self.report.get("quality", {}), self.report.get("throughput", {})
        lines = [f"model         {self.model_dir}", f"steps         {self.steps}, final loss "
                 f"{self.final_loss:.4f}" if self.final_loss is not None else f"steps         {self.steps}"]
        if q.get("final_dev"):
            lines.append("dev (final)   " + ", ".join(f"{k} {v:.4f}" for k, v in q["final_dev"].items()))
        if q.get("best"):
            b = q["best"]
            lines.append(f"dev (best)    {b['metric']} {b['value']:.4f} at step {b['step']} -> "
                         f"{self.model_dir.parent / 'best'}")
        if t:
            mfu = f", MFU {t['mfu']:.1%}" if t.get("mfu") else ""
            lines.append(f"throughput    {t['tokens_per_s']:,.0f} real tokens/s, {t['pairs_per_s']:,.1f} pairs/s"
                         f"{mfu}, peak {t['peak_memory_gib']:.2f} GiB on {t['card']} (over "
                         f"{t['steps_timed']} steps)")
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ building
def _autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _template_overrides(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in (("max_length", cfg.max_length), ("max_query_tokens", cfg.max_query_tokens))
            if v is not None}


def _enable_recompute_mixer(model, cfg: TrainConfig, device: torch.device) -> bool:
    """``recompute_mixer``: "on" where asked (a TrainingConfigError naming the flag where the backbone has no
    Mamba-1 mixers; check_config refused the other conflicts); "auto" where it applies and pays (eager steps
    without checkpointing, on CUDA, Mamba-1 from mamba-370m's width up: ``models.mamba.recompute_by_default``),
    then micro-batch by micro-batch: returns True where the loop decides per micro-batch
    (:func:`_recompute_for`), False otherwise."""
    from rerankers.models.mamba import recompute_by_default, set_recompute_mixer
    if cfg.recompute_mixer == "off" or (cfg.recompute_mixer == "auto" and (
            cfg.gradient_checkpointing or cfg.compile != "off" or not recompute_by_default(model.backbone, device))):
        return False
    try:
        set_recompute_mixer(model.backbone, cfg.recompute_mixer == "on")
    except ModelConfigError as e:
        if cfg.recompute_mixer == "on":
            raise TrainingConfigError(f"--recompute-mixer: {e}") from None
        return False
    if cfg.recompute_mixer == "on":
        logger.info("recompute_mixer: each Mamba-1 mixer's conv output and delta are rebuilt in the backward")
        return False
    from rerankers.models.mamba import RECOMPUTE_AUTO_MIN_TOKENS
    logger.info("recompute_mixer auto: in micro-batches of %d tokens or more, each Mamba-1 mixer's conv output and "
                "delta are rebuilt in the backward", RECOMPUTE_AUTO_MIN_TOKENS)
    return True


def _recompute_for(model, tokens: int) -> None:
    """``--recompute-mixer auto``'s choice for a micro-batch of ``tokens`` (padding included): rebuild from
    ``models.mamba.RECOMPUTE_AUTO_MIN_TOKENS`` up (bitwise the same gradients either way)."""
    from rerankers.models import mamba
    mamba.set_recompute_mixer(model.backbone, tokens >= mamba.RECOMPUTE_AUTO_MIN_TOKENS)


def _enable_gradient_checkpointing(model) -> None:
    backbone = model.backbone
    if hasattr(backbone, "gradient_checkpointing") and not hasattr(backbone, "model"):
        backbone.gradient_checkpointing = True
    elif hasattr(getattr(backbone, "model", None), "gradient_checkpointing_enable"):
        backbone.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        raise TrainingConfigError(f"--gradient-checkpointing: the {type(backbone).__name__} backbone has no "
                                  "gradient checkpointing")


def _saved_cross_encoder(cfg: TrainConfig):
    """``--backbone`` naming a saved cross-encoder folder (a trained, pruned or student model): that model,
    its head included, to train further; the template flags given replace its saved values."""
    from rerankers.models.adapter import make_template
    from rerankers.models.cross_encoder import CrossEncoder

    for name, value in (("init", cfg.init != "pretrained"), ("tokenizer", cfg.tokenizer is not None)):
        if value:
            raise TrainingConfigError(f"--{name}: --backbone {cfg.backbone} is a saved cross-encoder folder, trained "
                                      "on from its own weights and tokenizer")
    model = CrossEncoder.from_pretrained(cfg.backbone)
    overrides = _template_overrides(cfg)
    if overrides:
        model.template = make_template({**model.template.to_dict(), **overrides})
        model.spec.adapter().check_template(model.backbone, model.template, f"--backbone {cfg.backbone}")
    return model


def build_model(cfg: TrainConfig, device: torch.device | str = "cpu"):
    """The cross-encoder to train: a preset/folder/hub backbone (pretrained weights, or the same shape with
    random weights for ``--init random``), with a fresh head where the checkpoint has none; or a saved
    cross-encoder folder (``reranker_config.json``), trained on with its own head (a recovery fine-tune of a
    pruned model, a student). ``--qlora``: the LoRA targets quantised to NF4 on ``device``."""
    from rerankers.models.cross_encoder import CONFIG_NAME, CrossEncoder, to_be_trained

    torch.manual_seed(cfg.seed)
    if (Path(cfg.backbone).expanduser() / CONFIG_NAME).is_file():
        model = _saved_cross_encoder(cfg)
    else:
        with to_be_trained():
            model = CrossEncoder.from_backbone(cfg.backbone, template=_template_overrides(cfg) or None,
                                               init=cfg.init, tokenizer=cfg.tokenizer, seed=cfg.seed)
    if cfg.pooling is not None:
        model.set_pooling(cfg.pooling)
    if cfg.lora is not None:
        from rerankers.train.lora import apply_lora, quantize_base_nf4
        if cfg.qlora:
            layers = quantize_base_nf4(model, device)
            logger.info("QLoRA: %d layers of the base in 4-bit NF4", layers)
        trainable = apply_lora(model, cfg.lora, cfg.lora_alpha, cfg.lora_dropout)
        logger.info("LoRA r=%d on %s: %d trainable parameters (adapters + head)", cfg.lora,
                    ", ".join(model.lora["targets"]), trainable)
    return model


def static_shape(cfg: TrainConfig, model) -> StaticShape | None:
    """The fixed micro-batch shape of ``--static-tokens`` for ``model`` (None without it): slots for a step's
    pairs and the padding pieces (:func:`rerankers.train.batches.static_shape_for`)."""
    if cfg.static_tokens is None:
        return None
    return static_shape_for(model, cfg.static_tokens, cfg.queries_per_step * cfg.group_size)


def load_data(cfg: TrainConfig, needs_teacher: bool) -> list:
    from rerankers.train.sources import load_training_queries

    queries = load_training_queries(sources=cfg.train, qrels=cfg.train_qrels or None, corpus=cfg.corpus,
                                    queries=cfg.queries, rel_level=cfg.rel_level,
                                    negatives_depth=cfg.negatives_depth, teacher=cfg.teacher,
                                    negatives_run=cfg.negatives_run)
    return usable_queries(queries, cfg.group_size, needs_teacher=needs_teacher)


# --------------------------------------------------------------------------------------------- steps
def _forward_loss(forward, loss_fn, mb, device, autocast_dtype, group_size: int):
    """``forward`` (the model, or its compiled forward) on the micro-batch; the loss over its real pairs'
    scores only (a fixed-shape batch's padding slots come after them). The micro-batch's labels are
    checked on the host (:meth:`RankingLoss.check_inputs`) and every copy to the device is asynchronous:
    nothing here makes the host wait for the GPU."""
    teacher = mb.teacher if loss_fn.needs_teacher else None
    loss_fn.check_inputs(mb.labels, teacher)
    batch = mb.batch.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        scores = forward(batch)
    scores = scores.float()[:mb.num_pairs].view(mb.num_groups, group_size)
    return loss_fn(scores, to_device(mb.labels, device), None if teacher is None else to_device(teacher, device))


@dataclass
class _Queued:
    """An optimizer step queued on the device: what the host knows of it, and its numbers on their way
    (loss summed over processes, gradient norm, tokens, pairs, truncated pairs)."""

    step: int  # 0-based
    epoch: int
    qids: list[str]
    lr: float
    numbers: ReadBack
    lap: Any = None


def _optimizer_step(state: "_RunState", step: int) -> _Queued:
    """Queue one optimizer step (micro-batches, gradient sum, clipping, the guarded AdamW update); its
    numbers are read later (:func:`_read`), so that the host never waits for the GPU inside a step."""
    cfg, model, info = state.cfg, state.model, state.info
    epoch, groups, n_global = state.sampler.step(step, info.rank, info.world_size)
    qids = [g.qid for g in groups]
    mbs = micro_batches(model, groups, cfg.micro_batch_tokens, state.static)
    loss_sum = torch.zeros((), dtype=torch.float64, device=state.device)
    tokens = pairs = truncated = 0
    forward = model if state.forward is None else state.forward  # (torch.compile's wrapper has no truth value)
    for mb in mbs:
        if state.recompute_auto:
            _recompute_for(model, mb.batch.num_tokens)
        loss = _forward_loss(forward, state.loss_fn, mb, state.device, state.autocast_dtype,
                             cfg.group_size)
        scaled = loss * (mb.num_groups / n_global)
        scaled.backward()
        loss_sum += scaled.detach().double()
        tokens += mb.real_tokens
        pairs += mb.num_pairs
        truncated += mb.truncated
    for p in state.params:  # every process sums the same parameters, even those without a gradient here
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    sum_gradients(state.params, info)
    counts = to_device(torch.tensor([tokens, pairs, truncated], dtype=torch.float64), state.device)
    totals = sum_tensor(torch.cat([loss_sum.view(1), counts]), info)  # (loss, tokens, pairs, truncated)

    def stop(what: str, value: float) -> NoReturn:
        raise _non_finite(cfg, step, epoch, qids, what, value)

    lr = state.optimizer.param_groups[0]["lr"]
    norm = guarded_step(state.optimizer, state.params, totals[0], cfg.max_grad_norm, stop)
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=cfg.compile != "cuda-graphs")  # (graphs: see GraphedForward)
    return _Queued(step, epoch, qids, lr, ReadBack(torch.cat([totals, norm.view(1).double()])))


def _non_finite(cfg: TrainConfig, step: int, epoch: int, qids: list[str], what: str, value: float
                ) -> NonFiniteLossError:
    return NonFiniteLossError(f"step {step + 1} (epoch {epoch + 1}): the {what} is {value} on the batch of queries "
                              f"{', '.join(qids[:8])}{' ...' if len(qids) > 8 else ''}; training stopped, the last "
                              f"checkpoint in {cfg.out} is intact (lower --lr, check the data)")


def _read(state: "_RunState", queued: _Queued) -> dict[str, float]:
    """The numbers of a queued step (waits for that step only); a NonFiniteLossError where its loss or
    gradient norm is NaN / inf (the guarded update skipped it; the step queued after it may have updated the
    weights in memory, but nothing is logged, evaluated or saved after a non-finite step)."""
    loss, tokens, pairs, truncated, grad_norm = queued.numbers.values()
    for what, value in (("loss", loss), ("gradient norm", grad_norm)):
        if not math.isfinite(value) and (what == "loss" or state.cfg.max_grad_norm is not None):
            raise _non_finite(state.cfg, queued.step, queued.epoch, queued.qids, what, value)
    return {"epoch": queued.epoch, "loss": loss, "tokens": int(tokens), "pairs": int(pairs),
            "truncated": int(truncated), "grad_norm": grad_norm, "lr": queued.lr}


@dataclass
class _RunState:
    cfg: TrainConfig
    info: ProcessInfo
    device: torch.device
    autocast_dtype: torch.dtype | None
    model: Any
    loss_fn: Any
    sampler: GroupSampler
    optimizer: Any
    scheduler: Any
    total_steps: int
    dev: DevSet | None
    out: Path
    params: list = field(default_factory=list)
    static: StaticShape | None = None  # --static-tokens: every micro-batch padded to this shape
    forward: Any = None  # the training forward (--compile: compiled); None: the model
    recompute_auto: bool = False  # --recompute-mixer auto where it applies: decided micro-batch by micro-batch
    best: dict[str, Any] = field(default_factory=dict)
    dev_history: list[dict[str, Any]] = field(default_factory=list)


def _evaluate(state: _RunState, step: int, log: JsonlLog | None) -> dict[str, float]:
    means, speed = evaluate_dev(state.model, state.dev, device=state.device, autocast_dtype=state.autocast_dtype,
                                depth=state.cfg.eval_depth, batch_tokens=state.cfg.eval_batch_tokens,
                                info=state.info)
    state.model.train()
    record = {"step": step, "dev": means, "dev_pairs_per_s": speed["pairs_per_s"]}
    state.dev_history.append(record)
    metric = state.cfg.eval_metric
    text = ", ".join(f"{k} {v:.4f}" for k, v in means.items())
    logger.info("step %d: dev %s", step, text)
    improved = not state.best or means[metric] > state.best["value"]
    if improved:
        state.best = {"metric": metric, "value": means[metric], "step": step, "dev": means}
        if state.info.is_main:
            _save_model(state, state.out / "best", extra={"best": state.best})
    if log is not None:
        log.write({**record, "best": improved})
    return means


def _save_model(state: _RunState, folder: Path, extra: dict[str, Any] | None = None) -> None:
    """A CrossEncoder folder (head marked trained), assembled aside and published whole."""
    tmp = folder.parent / f".{folder.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    _write_model(state.model, tmp)
    if extra:
        with atomic_write(tmp / "training.json") as f:
            json.dump(extra, f, indent=2)
    publish_folder(tmp, folder)


def _write_model(model, folder: Path) -> None:
    """``model`` as a CrossEncoder folder (head marked trained); a LoRA model merged, with its adapter state."""
    model.head_trained = True
    if is_lora(model):
        merged_copy(model).save_pretrained(folder)
        save_lora_state(model, folder)
    else:
        model.save_pretrained(folder)


def _save_checkpoint(state: _RunState, step: int, log: JsonlLog | None) -> None:
    info = state.info
    tmp = ckpt.partial_folder(state.out, step) if info.is_main else None
    tmp = Path(broadcast_object(str(tmp) if tmp else None, info))
    ckpt.write_process_state(tmp, info.rank)
    barrier(info)
    if info.is_main:
        _write_model(state.model, tmp)
        trainer_state = {"best": state.best, "dev_history": state.dev_history,
                         "log_lines": log.lines if log else 0, "world_size": info.world_size}
        best = state.out / "best"
        ckpt.write_checkpoint(tmp, state.out, step, state.optimizer, state.scheduler,
                              trainer_state, keep=state.cfg.save_total_limit, protect=best if best.exists() else None)
    barrier(info)


def _run_steps(state: _RunState, start_step: int, log: JsonlLog | None) -> tuple[StepTimer, list[dict]]:
    """Every optimizer step from ``start_step``. Step k's numbers are read once step k+1 is queued (the
    host runs one step ahead of the GPU), its log record written then; a step that evaluates or
    checkpoints is read at once, so that nothing is written for a step before it is known to be finite."""
    cfg, info = state.cfg, state.info
    timer = StepTimer(state.device, training_flops_per_token(state.model))
    history: list[dict] = []
    state.model.train()
    window = {"loss": 0.0, "n": 0}
    bar = progress_bar(total=state.total_steps, initial=start_step, desc="train", unit="step", delay=0,
                       **({} if info.is_main else {"disable": True}))

    def finish(queued: _Queued) -> None:
        """Read a queued step (a NonFiniteLossError for a non-finite one), count it, log it if it logs."""
        nonlocal window
        numbers = _read(state, queued)
        timer.record(queued.lap, numbers["tokens"], numbers["pairs"])
        window["loss"] += numbers["loss"]
        window["n"] += 1
        bar.update(1)
        rates = timer.rates(last=min(cfg.log_every, len(timer.seconds)))
        bar.set_postfix(loss=f"{numbers['loss']:.4f}", lr=f"{numbers['lr']:.2e}",
                        tok_s=f"{rates['tokens_per_s']:.0f}", refresh=False)
        done = queued.step + 1
        if done % cfg.log_every == 0 or done == state.total_steps:
            record = {"step": done, "epoch": numbers["epoch"] + 1, "loss": window["loss"] / window["n"],
                      "lr": numbers["lr"], "grad_norm": numbers["grad_norm"], **rates,
                      "peak_memory_gib": peak_memory_gib(state.device), "truncated_pairs": numbers["truncated"]}
            history.append(record)
            if log is not None:
                log.write(record)
            logger.debug("step %d: %s", done, record)
            window = {"loss": 0.0, "n": 0}

    pending: _Queued | None = None
    timer.restart()
    for step in range(start_step, state.total_steps):
        queued = _optimizer_step(state, step)
        queued.lap = timer.lap()
        if pending is not None:
            finish(pending)
        pending = queued
        done = step + 1
        evaluates = state.dev is not None and cfg.eval_every and done % cfg.eval_every == 0
        saves = cfg.save_every and done % cfg.save_every == 0 and done < state.total_steps
        if evaluates or saves:
            finish(pending)
            pending = None
            if evaluates:
                _evaluate(state, done, log)
            if saves:
                _save_checkpoint(state, done, log)
            timer.restart()  # the next step's time starts after the pause
    if pending is not None:
        finish(pending)
    bar.close()
    return timer, history


# ------------------------------------------------------------------------------------------- the run
def _prepare_out(cfg: TrainConfig, resume: bool, info: ProcessInfo) -> Path:
    out = Path(cfg.out)
    check_writable_dir(out)
    if not resume and (out / ckpt.CONFIG_NAME).is_file():
        raise UsageError(f"--out {out}: holds an earlier run ({ckpt.CONFIG_NAME}); continue it with "
                         f"--resume {out}, or choose another --out")
    barrier(info)  # every process has looked before the main one writes the settings it looked for
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / ckpt.CONFIG_NAME)
    return out


def resolve_resume(folder: str, overrides: dict[str, Any]) -> TrainConfig:
    """The settings of the run in ``folder`` with the given flags (only harmless ones may differ)."""
    saved_file = Path(folder) / ckpt.CONFIG_NAME
    if not saved_file.is_file():
        raise UsageError(f"--resume {folder}: no {ckpt.CONFIG_NAME} there (not a rerank train output folder)")
    saved = load_saved_config(saved_file)
    return merge_resume(saved, {**overrides, "out": saved.out if "out" not in overrides else overrides["out"]},
                        folder)


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train ``cfg`` (resolved settings); ``resume`` continues from the latest checkpoint in ``cfg.out``."""
    from rerankers.train.losses import build_loss

    check_config(cfg)
    info, device = init_processes(cfg.device)
    try:
        if cfg.compile == "cuda-graphs" and device.type != "cuda":
            raise TrainingConfigError(f"--compile cuda-graphs: CUDA graphs need a CUDA device, this run is on {device}")
        loss_fn = build_loss(cfg.loss, **cfg.loss_args)
        out = _prepare_out(cfg, resume, info)
        dev = load_dev_set(cfg.eval_candidates, cfg.eval_qrels, cfg.eval_metric) if cfg.eval_candidates else None
        queries = load_data(cfg, needs_teacher=getattr(loss_fn, "needs_teacher", False))
        sampler = GroupSampler(queries, cfg.group_size, cfg.queries_per_step, cfg.seed)
        total = sampler.total_steps(cfg.epochs, cfg.max_steps)
        latest = ckpt.list_checkpoints(out)[-1:] if resume else []
        if resume and not latest:
            logger.warning("--resume %s: no complete checkpoint yet; starting the run from step 0", out)
        if latest and cfg.lora is not None:  # the same frozen base, wrapped the same way, then its adapters
            from rerankers.train.lora import load_lora_state
            model = build_model(cfg, device)
            load_lora_state(model, latest[0][1])
        elif latest:
            from rerankers.models.cross_encoder import CrossEncoder
            model = CrossEncoder.from_pretrained(latest[0][1])
        else:
            model = build_model(cfg, device)
        if cfg.gradient_checkpointing:
            _enable_gradient_checkpointing(model)
        recompute_auto = _enable_recompute_mixer(model, cfg, device)
        model.to(device)
        static = static_shape(cfg, model)
        optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, device, head_lr=cfg.head_lr)
        scheduler = build_scheduler(optimizer, total, cfg.warmup_steps, cfg.schedule)
        state = _RunState(cfg, info, device, _autocast_dtype(cfg, device), model, loss_fn, sampler, optimizer,
                          scheduler, total, dev, out, params=[p for p in model.parameters() if p.requires_grad],
                          static=static, forward=training_forward(model, cfg.compile), recompute_auto=recompute_auto)
        start, log_lines = 0, None
        if latest:
            start, folder = latest[0]
            saved = ckpt.load_training_state(folder, optimizer, scheduler, info.rank)
            if saved.get("world_size", 1) != info.world_size:
                logger.warning("resuming a %d-process run with %d processes: the same global batch, "
                               "but not bitwise the same sums", saved.get("world_size", 1), info.world_size)
            state.best, state.dev_history = saved.get("best") or {}, saved.get("dev_history") or []
            log_lines = saved.get("log_lines", 0)
            logger.info("resuming %s from step %d of %d", folder, start, total)
        log = JsonlLog(out / "train_log.jsonl", keep_lines=log_lines) if info.is_main else None
        logger.info("training %s on %d queries: %d steps of %d groups x %d documents, %s on %s",
                    cfg.backbone, len(queries), total, cfg.queries_per_step, cfg.group_size, cfg.loss,
                    device_name(device))
        timer, history = _run_steps(state, start, log)
        final_dev = None
        if dev is not None:  # the last evaluation, unless --eval-every just made it
            done = state.dev_history[-1] if state.dev_history else None
            final_dev = done["dev"] if done and done["step"] == total else _evaluate(state, total, log)
        if info.is_main:
            _save_model(state, out / "model")
        report = _report(state, timer, history, final_dev, len(queries), start)
        if info.is_main:
            with atomic_write(out / "train_report.json") as f:
                json.dump(report, f, indent=2)
        barrier(info)
        return TrainResult(out / "model", report, total, history[-1]["loss"] if history else None, history)
    finally:
        shutdown(info)


def _report(state: _RunState, timer: StepTimer, history: list[dict], final_dev: dict | None, n_queries: int,
            start: int) -> dict[str, Any]:
    import platform

    import transformers

    cfg = state.cfg
    n_params = count_parameters(state.model)["total"]
    return {
        "settings": cfg.to_dict(),
        "data": {"training_queries": n_queries, "steps": state.total_steps, "steps_per_epoch":
                 state.sampler.steps_per_epoch, "groups_per_step": cfg.queries_per_step, "group_size": cfg.group_size,
                 "resumed_from_step": start or None},
        "model": {"backbone": cfg.backbone, "init": cfg.init, "parameters": n_params,
                  "trainable_parameters": sum(p.numel() for p in state.params)},
        "quality": {"final_dev": final_dev, "best": state.best or None, "dev_history": state.dev_history},
        "throughput": {**timer.summary(), "processes": state.info.world_size},
        "final_loss": history[-1]["loss"] if history else None,
        "software": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
    }

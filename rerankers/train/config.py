"""The settings of one training run: a dataclass, a strict YAML reader, and the checks.

Three layers, later ones win: the dataclass defaults (RankMamba's passage recipe where it has a
value), a ``--config FILE.yaml`` (strict: an unknown key is an error naming the file and the key),
and the command-line flags that were given. The resolved settings are saved with the run
(``OUT/train_config.json``) so that ``rerank train --resume OUT`` continues with exactly them.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rerankers.errors import TrainingConfigError

SCHEDULES = ("linear", "cosine", "constant")
INITS = ("pretrained", "random")
DTYPES = ("auto", "float32", "bfloat16")
# reduce-overhead: torch.compile with CUDA graphs; cuda-graphs: the eager forward + backward captured (train.compile)
COMPILE_MODES = ("off", "default", "reduce-overhead", "cuda-graphs")
RECOMPUTE_MIXER = ("auto", "on", "off")  # auto: on where it applies and pays (models.mamba.recompute_by_default)


@dataclass
class TrainConfig:
    """Every setting of ``rerank train`` (the flag of a field is ``--field-name``).

    Data: ``train`` sources (candidates files, run files, JSONL, TSV triples, ir_datasets ids) with
    ``train_qrels``, ``corpus``, ``queries``; positives are judged >= ``rel_level`` (None: 2 on graded
    TREC DL qrels, else 1); negatives come from the first ``negatives_depth`` candidates.
    A step is ``queries_per_step`` groups of ``group_size`` documents (1 positive + n-1 negatives);
    a process splits its groups into packed micro-batches of at most ``micro_batch_tokens`` real
    tokens (a group is never split), accumulating gradients over them. ``static_tokens``: every
    micro-batch padded to exactly that many tokens (and a fixed number of sequence slots; the loss
    ignores the padding), so that every step has one shape; it replaces ``micro_batch_tokens`` as the
    budget. ``compile``: the model's training forward through torch.compile ("default", or
    "reduce-overhead" = CUDA graphs, which want ``static_tokens``), or "cuda-graphs": the eager forward and
    backward captured once and replayed (CUDA, ``static_tokens`` required). ``recompute_mixer`` (Mamba-1):
    each mixer's conv output and delta rebuilt in the backward instead of kept (eager steps: not with
    ``compile``; not with ``gradient_checkpointing``, which rebuilds every activation already). "auto"
    (the default) turns it on where it applies and pays, on CUDA from mamba-370m's width up, in micro-batches of
    8,192 tokens or more: on the H200 it keeps mamba-370m's step over one 23.3K-token micro-batch in 26.7 instead of
    35.3 GiB for 3.6% of its time, but cost mamba-130m's 1.5-17% and mamba-370m's at 64 pairs 36% (BENCHMARKS.md);
    "on" asks for it (an error where it does not apply), "off" keeps every activation.
    """

    backbone: str = ""
    out: str = ""
    train: list[str] = field(default_factory=list)
    train_qrels: list[str] = field(default_factory=list)
    corpus: str | None = None
    queries: str | None = None
    negatives_run: str | None = None
    rel_level: int | None = None
    negatives_depth: int | None = None
    teacher: str | None = None
    # model
    init: str = "pretrained"
    tokenizer: str | None = None
    max_length: int | None = None
    max_query_tokens: int | None = None
    lora: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    qlora: bool = False
    gradient_checkpointing: bool = False
    recompute_mixer: str = "auto"
    pooling: str | None = None
    # objective and batches
    loss: str = "lce"
    loss_args: dict[str, Any] = field(default_factory=dict)
    group_size: int = 8
    queries_per_step: int = 8
    micro_batch_tokens: int = 16384
    static_tokens: int | None = None
    compile: str = "off"
    # optimisation
    lr: float = 2e-5
    head_lr: float | None = None
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    schedule: str = "linear"
    max_grad_norm: float | None = 1.0
    epochs: float = 1.0
    max_steps: int | None = None
    seed: int = 42
    dtype: str = "auto"
    device: str | None = None
    # evaluation, checkpoints, logging
    eval_candidates: str | None = None
    eval_qrels: str | None = None
    eval_every: int | None = None
    eval_depth: int = 100
    eval_metric: str = "nDCG@10"
    eval_batch_tokens: int = 16384
    save_every: int | None = None
    save_total_limit: int | None = None
    log_every: int = 10

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# fields that may change on --resume without changing the run's trajectory
RESUMABLE_OVERRIDES = frozenset({"log_every", "save_total_limit", "device", "eval_batch_tokens", "out",
                                 "recompute_mixer"})  # recompute_mixer: what is kept, not what is computed
_POSITIVE = ("group_size", "queries_per_step", "micro_batch_tokens", "eval_depth", "log_every", "eval_batch_tokens")
_POSITIVE_OR_NONE = ("max_steps", "eval_every", "save_every", "save_total_limit", "negatives_depth", "lora",
                     "max_length", "max_query_tokens", "static_tokens")


def _field_types() -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _check_keys(values: Mapping[str, Any], source: str) -> None:
    """Strictness: an unknown key is a TrainingConfigError naming ``source`` and the key."""
    fields = _field_types()
    unknown = [k for k in values if k.replace("-", "_") not in fields]
    if unknown:
        raise TrainingConfigError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; "
                                  f"known: {', '.join(fields)}")


def config_from_dict(values: Mapping[str, Any], source: str = "config") -> TrainConfig:
    """A TrainConfig from a mapping; an unknown key is a TrainingConfigError naming ``source`` and the key."""
    _check_keys(values, source)
    cfg = TrainConfig()
    for key, value in values.items():
        name = key.replace("-", "_")
        default = getattr(cfg, name)
        if isinstance(default, list) and isinstance(value, (str, os.PathLike)):
            value = [str(value)]
        setattr(cfg, name, value)
    return cfg


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping of a YAML (or JSON) config file; errors name the file."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise TrainingConfigError(f"{p}: cannot read the config: {e.strerror or e}") from None
    try:
        values = yaml.safe_load(text) if p.suffix.lower() != ".json" else json.loads(text)
    except (yaml.YAMLError, ValueError) as e:
        raise TrainingConfigError(f"{p}: not valid YAML/JSON: {str(e).splitlines()[0]}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise TrainingConfigError(f"{p}: a config must be a mapping of settings, found {type(values).__name__}")
    return values


def resolve_config(config_file: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None
                   ) -> TrainConfig:
    """Defaults < ``config_file`` < ``overrides`` (only the flags actually given), then :func:`check_config`."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update({k.replace("-", "_"): v for k, v in read_config_file(config_file).items()})
        _check_keys(values, str(config_file))  # unknown keys are named with the file
    values.update(overrides or {})
    cfg = config_from_dict(values, str(config_file or "flags"))
    check_config(cfg)
    return cfg


_FLOAT_FIELDS = ("lr", "head_lr", "weight_decay", "max_grad_norm", "epochs", "lora_alpha", "lora_dropout")


def _coerce(name: str, value: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` as a string: numbers of float settings are accepted in that spelling; it reads
    ``on`` / ``off`` as booleans: ``recompute_mixer`` takes them (and true / false) as "on" / "off"."""
    if name == "recompute_mixer" and isinstance(value, bool):
        return "on" if value else "off"
    if name in _FLOAT_FIELDS and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _check_type(name: str, value: Any) -> None:
    default = getattr(TrainConfig(), name)
    if name in _FLOAT_FIELDS:
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int) or name in _POSITIVE_OR_NONE or name == "rel_level":
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, list):
        ok, want = isinstance(value, list) and all(isinstance(v, str) for v in value), "a list of paths"
    elif isinstance(default, dict):
        ok, want = isinstance(value, dict), "a mapping"
    else:
        ok, want = isinstance(value, str), "a string"
    if not ok:
        raise TrainingConfigError(f"--{name.replace('_', '-')}: expected {want}, got {value!r}")


def check_config(cfg: TrainConfig) -> None:
    """Value checks; a TrainingConfigError names the setting (as its flag)."""
    def bad(name: str, why: str) -> TrainingConfigError:
        return TrainingConfigError(f"--{name.replace('_', '-')}: {why}")

    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is not None:
            setattr(cfg, f.name, _coerce(f.name, value))
            _check_type(f.name, getattr(cfg, f.name))
    if not cfg.backbone:
        raise bad("backbone", "required (a preset name, a local folder or a hub id)")
    if not cfg.out:
        raise bad("out", "required (the run's output folder)")
    if not cfg.train:
        raise bad("train", "required (one or more training sources)")
    for name in _POSITIVE:
        if getattr(cfg, name) < 1:
            raise bad(name, f"must be >= 1, got {getattr(cfg, name)}")
    for name in _POSITIVE_OR_NONE:
        value = getattr(cfg, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise bad(name, f"must be a positive integer, got {value!r}")
    if cfg.group_size < 2 and cfg.loss not in ("bce",):
        raise bad("group_size", f"a ranking loss needs at least 2 documents per group, got {cfg.group_size}")
    if cfg.init not in INITS:
        raise bad("init", f"one of {', '.join(INITS)}, got {cfg.init!r}")
    if cfg.schedule not in SCHEDULES:
        raise bad("schedule", f"one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    if cfg.dtype not in DTYPES:
        raise bad("dtype", f"one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    if cfg.compile not in COMPILE_MODES:
        raise bad("compile", f"one of {', '.join(COMPILE_MODES)}, got {cfg.compile!r}")
    if cfg.recompute_mixer not in RECOMPUTE_MIXER:
        raise bad("recompute_mixer", f"one of {', '.join(RECOMPUTE_MIXER)}, got {cfg.recompute_mixer!r}")
    if cfg.recompute_mixer == "on" and cfg.gradient_checkpointing:
        raise bad("recompute_mixer", "not with --gradient-checkpointing, which rebuilds every activation already")
    if cfg.recompute_mixer == "on" and cfg.compile != "off":
        raise bad("recompute_mixer", "eager steps only: not with --compile (its saved-tensor hooks are not traced)")
    if cfg.compile == "cuda-graphs" and cfg.static_tokens is None:
        raise bad("compile", "cuda-graphs replays one captured shape: give every micro-batch one with --static-tokens")
    if cfg.compile == "cuda-graphs" and cfg.gradient_checkpointing:
        raise bad("compile", "cuda-graphs: not with --gradient-checkpointing (its recomputation is not captured)")
    if cfg.static_tokens is not None and cfg.static_tokens < 2:
        raise bad("static_tokens", f"must hold a pair and a padding token (>= 2), got {cfg.static_tokens}")
    if not cfg.lr > 0:
        raise bad("lr", f"must be positive, got {cfg.lr}")
    if cfg.head_lr is not None and not cfg.head_lr > 0:
        raise bad("head_lr", f"must be positive, got {cfg.head_lr}")
    if cfg.pooling is not None and cfg.pooling not in ("cls", "last", "mean"):
        raise bad("pooling", f"one of cls, last, mean, got {cfg.pooling!r}")
    if cfg.weight_decay < 0:
        raise bad("weight_decay", f"must be >= 0, got {cfg.weight_decay}")
    if cfg.warmup_steps < 0:
        raise bad("warmup_steps", f"must be >= 0, got {cfg.warmup_steps}")
    if cfg.max_grad_norm is not None and not cfg.max_grad_norm > 0:
        raise bad("max_grad_norm", f"must be positive (or null for no clipping), got {cfg.max_grad_norm}")
    if not cfg.epochs > 0 and cfg.max_steps is None:
        raise bad("epochs", f"must be positive, got {cfg.epochs}")
    if not 0.0 <= cfg.lora_dropout < 1.0:
        raise bad("lora_dropout", f"must be in [0, 1), got {cfg.lora_dropout}")
    if (cfg.eval_candidates is None) != (cfg.eval_qrels is None):
        raise bad("eval_candidates", "--eval-candidates and --eval-qrels go together")
    if cfg.eval_every is not None and cfg.eval_candidates is None:
        raise bad("eval_every", "needs --eval-candidates and --eval-qrels")
    if cfg.init == "random" and cfg.lora is not None:
        raise bad("lora", "LoRA adapts pretrained weights; with --init random train every weight instead")
    if cfg.qlora and cfg.lora is None:
        raise bad("qlora", "QLoRA is LoRA over a 4-bit base: give the adapters' rank with --lora R")


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    from rerankers.utils.io import atomic_write

    with atomic_write(path) as f:
        json.dump(cfg.to_dict(), f, indent=2)
        f.write("\n")


def load_saved_config(path: str | os.PathLike) -> TrainConfig:
    p = Path(path)
    try:
        values = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrainingConfigError(f"{p}: unreadable saved settings: {e}") from None
    return config_from_dict(values, str(p))


def merge_resume(saved: TrainConfig, overrides: Mapping[str, Any], folder: str) -> TrainConfig:
    """The saved settings of a run with the flags given to ``--resume``; a flag that would change the
    run's trajectory (another backbone, loss, data, ...) is a ResumeMismatchError naming it."""
    from rerankers.errors import ResumeMismatchError

    cfg = dataclasses.replace(saved)
    for key, value in overrides.items():
        if value == getattr(saved, key):
            continue
        if key not in RESUMABLE_OVERRIDES:
            raise ResumeMismatchError(f"--resume {folder}: the run was trained with {key}={getattr(saved, key)!r}, "
                                      f"not {value!r}; start a new run (another --out) to change it")
        setattr(cfg, key, value)
    check_config(cfg)
    return cfg

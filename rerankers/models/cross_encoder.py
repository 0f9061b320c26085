"""CrossEncoder = backbone + pooling + head: a PackedBatch of (query, document) pairs -> scores (S,).

- Mamba: last-token pooling (causal; RankMamba template puts the query last), Linear head.
- BERT family: [CLS] pooling, ``dense -> tanh/gelu -> out_proj`` head (the shape of the
  sequence-classification heads, so published cross-encoders load with their scores).
- T5 (monoT5): no pooling; score = log p("true") over {"true", "false"} at the first decoder step.

Saved folder (``save_pretrained``)::

    reranker_config.json   backbone type, base (preset/path), template, max lengths, head, token ids
    backbone/              the backbone's own checkpoint (config.json + model.safetensors)
    head.safetensors       the head's weights (BERT family, Mamba)
    tokenizer files        (tokenizer.json, tokenizer_config.json, ...)

Loading our folder is strict: CheckpointMismatchError names missing / unexpected keys.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from rerankers.data.packing import PackedBatch
from rerankers.data.templates import EncodedPairs, TemplateConfig, TemplateError, encode_pairs
from rerankers.models.checkpoint_files import compare_keys, read_tensor_file
from rerankers.errors import CheckpointMismatchError, ModelConfigError, ModelLoadingError
from rerankers.models.heads import ScoreHead, true_false_score
from rerankers.models.presets import Preset, detect_kind, fetch_folder, resolve

logger = logging.getLogger(__name__)

CONFIG_NAME = "reranker_config.json"
HEAD_NAME = "head.safetensors"
BACKBONE_DIR = "backbone"
FORMAT = "rerankers-cross-encoder"
FORMAT_VERSION = 1


class CrossEncoder(nn.Module):
    """Scores (query, document) pairs.

    Attributes:
        backbone:       BertBackbone | T5Backbone | MambaBackbone
        head:           ScoreHead (None for T5)
        tokenizer:      a transformers tokenizer
        template:       TemplateConfig (template name, max lengths)
        backbone_type:  "bert" | "t5" | "mamba"
        base:           the preset name or path it was built from (informational)
    """

    def __init__(self, backbone: nn.Module, head: Optional[ScoreHead], tokenizer, template: TemplateConfig,
                 backbone_type: str, base: str = ""):
        super().__init__()
        if backbone_type not in ("bert", "t5", "mamba"):
            raise ModelConfigError(f"unknown backbone_type {backbone_type!r} (bert, t5, mamba)")
        if (head is None) != (backbone_type == "t5"):
            raise ModelConfigError("a T5 cross-encoder has no head; the others need one")
        if template.name != backbone_type:
            raise ModelConfigError(f"a {backbone_type} backbone needs the {backbone_type!r} template, "
                                   f"got {template.name!r}")
        self.backbone = backbone
        self.head = head
        self.tokenizer = tokenizer
        self.template = template
        self.backbone_type = backbone_type
        self.base = base

    # ---- scoring ------------------------------------------------------------------------------
    @property
    def pooling(self) -> str:
        return getattr(self.backbone, "pooling", "cls")

    def forward(self, batch: PackedBatch) -> Tensor:
        """PackedBatch (S sequences, T tokens) -> scores (S,) (fp32 for T5, the head's dtype else)."""
        if self.backbone_type == "t5":
            return true_false_score(self.backbone(batch))
        hidden = self.backbone(batch)  # (T, H)
        index = batch.first_token_index if self.pooling == "cls" else batch.last_token_index
        return self._head(hidden.index_select(0, index.to(hidden.device)))

    def _head(self, pooled: Tensor) -> Tensor:
        """(S, H) -> (S,) in the head's own dtype even under autocast: bf16 scores keep only 8
        significant bits (steps of 1/16 around 10), which would tie documents in a ranking."""
        with torch.autocast(pooled.device.type, enabled=False):
            return self.head(pooled.to(self.head.out_proj.weight.dtype))

    def forward_padded(self, batch: PackedBatch) -> Tensor:
        """The padded oracle path for the same batch: scores (S,)."""
        ids, mask, tt = batch.to_padded(int(getattr(self.backbone, "pad_token_id", 0) or 0))
        if self.backbone_type == "t5":
            return true_false_score(self.backbone.forward_padded(ids, mask))
        if self.backbone_type == "bert":
            hidden = self.backbone.forward_padded(ids, mask, tt)
        else:
            hidden = self.backbone.forward_padded(ids, mask)
        rows = torch.arange(ids.shape[0], device=ids.device)
        cols = torch.zeros_like(rows) if self.pooling == "cls" else batch.seqlens.to(ids.device) - 1
        return self._head(hidden[rows, cols])

    def encode(self, queries: Sequence[str], docs: Sequence[str], ids: Optional[Sequence[Any]] = None,
               warn: bool = True) -> EncodedPairs:
        """Token ids of the pairs with this model's template and truncation."""
        return encode_pairs(self.tokenizer, queries, docs, self.template, ids=ids, warn=warn)

    @property
    def pads(self) -> bool:
        """True where the backbone pads internally (T5): batch budgets then count padded tokens."""
        return self.backbone_type == "t5"

    # ---- building -----------------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, name_or_path: str | os.PathLike, template: Optional[dict[str, Any]] = None,
                      head_activation: Optional[str] = None) -> "CrossEncoder":
        """A cross-encoder on a pretrained backbone (preset name, hub id or local folder).

        A ``*ForSequenceClassification`` checkpoint (one logit) brings its trained head, so its
        published scores are reproduced; otherwise the head is fresh (BERT: dense initialised from
        the pretrained pooler where there is one).
        """
        folder, preset = resolve(name_or_path)
        kind = preset.kind if preset is not None else detect_kind(folder)
        tokenizer = _load_tokenizer(folder, preset)
        base = str(name_or_path)
        overrides = dict(preset.template) if preset is not None else {}
        overrides.update(template or {})
        if kind == "bert":
            from rerankers.models.bert import BertBackbone, pretrained_pooler, read_classification_head
            backbone = BertBackbone.from_pretrained(folder)
            tcfg = _bert_template(backbone.config, overrides)
            published = read_classification_head(folder)
            if published is not None:
                head = ScoreHead(backbone.hidden_size, published["activation"], _dropout(backbone.config))
                head.load_state_dict(published["state"])
                logger.info("%s: loaded its sequence-classification head", base)
            else:
                act = head_activation or ("gelu" if backbone.model_type == "electra" else "tanh")
                head = ScoreHead(backbone.hidden_size, act, _dropout(backbone.config))
                pooler = pretrained_pooler(folder) if act == "tanh" else None
                if pooler is not None:
                    head.load_state_dict(pooler, strict=False)
                logger.info("%s: fresh scoring head (%s)", base, act)
            return cls(backbone, head, tokenizer, tcfg, "bert", base)
        if kind == "t5":
            from rerankers.models.t5 import T5Backbone, true_false_ids
            t, f = true_false_ids(tokenizer)
            backbone = T5Backbone.from_pretrained(folder, t, f)
            tcfg = _make_template({"name": "t5", **overrides})
            return cls(backbone, None, tokenizer, tcfg, "t5", base)
        backbone = _mamba_class().from_pretrained(folder)
        tcfg = _make_template({"name": "mamba", **overrides})
        head = ScoreHead(backbone.hidden_size, head_activation or "none")
        return cls(backbone, head, tokenizer, tcfg, "mamba", base)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> "CrossEncoder":
        """Load a saved CrossEncoder folder (strict), or else build one with :meth:`from_backbone`."""
        path = Path(name_or_path).expanduser()
        if path.is_dir() and (path / CONFIG_NAME).is_file():
            return cls._load_saved(path)
        return cls.from_backbone(name_or_path)

    @classmethod
    def _load_saved(cls, path: Path) -> "CrossEncoder":
        cfg_file = path / CONFIG_NAME
        cfg, tcfg = _read_config(cfg_file)
        kind = cfg["backbone_type"]
        tokenizer = _load_tokenizer(path, None)
        bdir = path / BACKBONE_DIR
        if not bdir.is_dir():
            raise ModelLoadingError(f"{path}: no {BACKBONE_DIR}/ folder (the backbone's checkpoint)")
        if kind == "bert":
            from rerankers.models.bert import BertBackbone
            backbone = BertBackbone.from_pretrained(bdir, strict=True)
            if tcfg.max_length > _position_limit(backbone.config):
                raise ModelConfigError(f"{cfg_file}: template max_length={tcfg.max_length} exceeds the model's "
                                       f"{_position_limit(backbone.config)} positions")
        elif kind == "t5":
            from rerankers.models.t5 import T5Backbone
            backbone = T5Backbone.from_pretrained(bdir, cfg["true_token_id"], cfg["false_token_id"], strict=True)
        else:
            backbone = _mamba_class().from_pretrained(bdir)
        head = None
        if kind != "t5":
            hcfg = cfg.get("head") or {}
            head = ScoreHead(backbone.hidden_size, hcfg.get("activation", "none"), float(hcfg.get("dropout", 0.0)))
            _load_head_strict(head, path / HEAD_NAME)
        return cls(backbone, head, tokenizer, tcfg, kind, cfg.get("base", ""))

    # ---- saving -------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION,
                               "backbone_type": self.backbone_type, "base": self.base,
                               "template": self.template.to_dict()}
        if self.head is not None:
            cfg["head"] = {"activation": self.head.activation, "dropout": float(self.head.dropout.p)}
        else:
            cfg["true_token_id"] = self.backbone.true_token_id
            cfg["false_token_id"] = self.backbone.false_token_id
        return cfg

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the folder described in the module doc; each file is replaced atomically."""
        from safetensors.torch import save_file
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-save-", dir=out))
        try:
            self.backbone.save_pretrained(tmp / BACKBONE_DIR)
            if self.head is not None:
                save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()},
                          str(tmp / HEAD_NAME))
            self.tokenizer.save_pretrained(str(tmp))
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2) + "\n")
            for f in sorted(tmp.rglob("*")):
                if f.is_file():
                    dest = out / f.relative_to(tmp)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(f, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _read_config(cfg_file: Path) -> tuple[dict[str, Any], TemplateConfig]:
    """A saved folder's config (checked) and its template; ModelConfigError names the file and field."""
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise ModelConfigError(f"{cfg_file}: unreadable JSON: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        found = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise ModelConfigError(f"{cfg_file}: not a {FORMAT} config (format={found!r})")
    kind = cfg.get("backbone_type")
    for key in ("backbone_type", "template") + (("true_token_id", "false_token_id") if kind == "t5" else ()):
        if key not in cfg:
            raise ModelConfigError(f"{cfg_file}: missing field {key!r}")
    if kind not in ("bert", "t5", "mamba"):
        raise ModelConfigError(f"{cfg_file}: unknown backbone_type {kind!r} (bert, t5, mamba)")
    if not isinstance(cfg["template"], dict) or not isinstance(cfg.get("head") or {}, dict):
        raise ModelConfigError(f"{cfg_file}: 'template' and 'head' must be JSON objects")
    try:
        tcfg = TemplateConfig.from_dict(cfg["template"])
    except (TemplateError, TypeError) as e:
        raise ModelConfigError(f"{cfg_file}: template: {e}") from None
    if tcfg.name != kind:
        raise ModelConfigError(f"{cfg_file}: template {tcfg.name!r} does not fit backbone_type {kind!r}")
    return cfg, tcfg


def _dropout(config) -> float:
    p = getattr(config, "classifier_dropout", None)
    return float(p if p is not None else getattr(config, "hidden_dropout_prob", 0.1))


def _position_limit(config) -> int:
    """The longest sequence a BERT-family model can take (RoBERTa numbers positions from pad + 1)."""
    roberta = config.model_type in ("roberta", "xlm-roberta")
    return int(config.max_position_embeddings) - (int(config.pad_token_id) + 1 if roberta else 0)


def _bert_template(config, overrides: dict[str, Any]) -> TemplateConfig:
    roberta = config.model_type in ("roberta", "xlm-roberta")
    limit = _position_limit(config)
    d = {"name": "bert", "max_length": min(512, limit), "max_query_tokens": 64,
         "pair_separators": 2 if roberta else 1, "use_token_types": (not roberta) and config.type_vocab_size > 1}
    d.update(overrides)
    if d["max_length"] > limit:
        raise ModelConfigError(f"template max_length={d['max_length']} exceeds the model's {limit} positions")
    return _make_template(d)


def _make_template(d: dict[str, Any]) -> TemplateConfig:
    try:
        return TemplateConfig(**d)
    except (TemplateError, TypeError) as e:  # TypeError: an unknown field
        raise ModelConfigError(f"template {d}: {e}") from None


def _load_tokenizer(folder: Path, preset: Optional[Preset]):
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as first:  # no tokenizer files in the folder
        if preset is None or preset.tokenizer is None:
            raise ModelLoadingError(f"{folder}: no tokenizer could be loaded ({type(first).__name__}: {first})") from None
    tok_dir = fetch_folder(preset.tokenizer, f"tokenizer of preset {preset.name!r}")
    try:
        return AutoTokenizer.from_pretrained(str(tok_dir))
    except Exception as e:
        raise ModelLoadingError(f"tokenizer {preset.tokenizer!r}: {type(e).__name__}: {e}") from None


def _load_head_strict(head: ScoreHead, file: Path) -> None:
    if not file.is_file():
        raise ModelLoadingError(f"{file}: the head's weights are missing")
    state = read_tensor_file(file)
    missing, unexpected, mismatched = compare_keys(head.state_dict(), state, prefix="head.")
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(missing, unexpected, mismatched, source=str(file))
    head.load_state_dict(state)


def _mamba_class():
    try:
        from rerankers.models.mamba import MambaBackbone
    except ImportError as e:
        raise ModelLoadingError(f"the Mamba backbone is not available: {e}") from None
    return MambaBackbone

"""BERT-family encoders (BERT, ELECTRA, RoBERTa, MiniLM) as packed backbones.

The encoder is transformers' own model (``AutoModel``) with its attention routed through
:mod:`rerankers.models.varlen_attention`:

- packed path (:meth:`BertBackbone.forward`): all S sequences in one row (1, T) with per-sequence
  position ids and token types; attention is varlen (flash-attn / torch varlen_attn on CUDA,
  per-sequence SDPA on the CPU), so no token attends outside its own pair;
- padded path (:meth:`BertBackbone.forward_padded`): (S, L) with a padding mask through SDPA -- the
  oracle for the packed path.

Pooling is ``[CLS]`` (the first token of each sequence). Checkpoints are plain transformers
folders (``config.json`` + ``model.safetensors``); loading is strict about the encoder's weights.
:class:`BertAdapter` is the registry's ``bert`` row: template defaults from the model's positions,
a published sequence-classification head where the checkpoint has one, else a fresh head.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rerankers.data.packing import PackedBatch
from rerankers.data.templates import TemplateConfig
from rerankers.errors import CheckpointMismatchError, ModelConfigError
from rerankers.models import varlen_attention
from rerankers.models.adapter import BackboneAdapter, architecture, make_template, transformers_config
from rerankers.models.checkpoint_files import compare_keys, read_state_dict, write_transformers_folder
from rerankers.models.heads import ScoreHead
from rerankers.models.prune import HEADS_KEY, apply_saved_heads
from rerankers.models.registry import BACKBONES
from rerankers.models.varlen_attention import register_with_transformers

logger = logging.getLogger(__name__)

BERT_FAMILY = BACKBONES["bert"].model_types
_ROBERTA_TYPES = ("roberta", "xlm-roberta")


def _position_offset(config) -> int:
    """RoBERTa numbers positions from padding_idx + 1; BERT and ELECTRA from 0."""
    if config.model_type in _ROBERTA_TYPES:
        return int(config.pad_token_id) + 1
    return 0


def position_limit(config) -> int:
    """The longest sequence a BERT-family model can take."""
    return int(config.max_position_embeddings) - _position_offset(config)


class BertBackbone(nn.Module):
    """A transformers BERT-family encoder: PackedBatch -> hidden states (T, H).

    Attributes:
        model:        the transformers base model (BertModel, ElectraModel, RobertaModel, ...)
        hidden_size:  H
        pooling:      "cls"
    """

    pooling = BACKBONES["bert"].pooling

    def __init__(self, model: nn.Module):
        super().__init__()
        impl = register_with_transformers()
        self.model = model
        self.model.config._attn_implementation = impl
        if getattr(self.model, "pooler", None) is not None:  # the head owns any pooler weights
            self.model.pooler = None
        self.hidden_size = int(model.config.hidden_size)
        self._pos_offset = _position_offset(model.config)

    @property
    def config(self):
        return self.model.config

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    @property
    def model_type(self) -> str:
        return str(self.model.config.model_type)

    @property
    def pad_token_id(self) -> int:
        pid = getattr(self.model.config, "pad_token_id", None)
        return 0 if pid is None else int(pid)

    # ---- forward paths -------------------------------------------------------------------------
    def forward(self, batch: PackedBatch) -> Tensor:
        """Packed path: PackedBatch (T tokens, S sequences) -> hidden states (T, H)."""
        tt = None if batch.token_type_ids is None else batch.token_type_ids[None]
        if tt is None and self.config.type_vocab_size > 0:
            tt = torch.zeros_like(batch.input_ids)[None]
        before = varlen_attention.packed_calls
        out = self.model(input_ids=batch.input_ids[None], token_type_ids=tt,
                         position_ids=(batch.position_ids + self._pos_offset)[None],
                         cu_seqlens=batch.cu_seqlens, max_seqlen=int(batch.max_seqlen))
        if varlen_attention.packed_calls == before and self.config.num_hidden_layers > 0:
            raise RuntimeError("the packed BERT path needs a transformers version whose models call the "
                               "AttentionInterface with extra keyword arguments (transformers >= 5); this one "
                               "bypassed it, which would attend across pairs")
        return out.last_hidden_state[0]

    def forward_padded(self, input_ids: Tensor, attention_mask: Tensor,
                       token_type_ids: Tensor | None = None) -> Tensor:
        """Padded path: input_ids, attention_mask (S, L) -> hidden states (S, L, H)."""
        S, L = input_ids.shape
        pos = torch.arange(L, device=input_ids.device)[None].expand(S, L) + self._pos_offset
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         position_ids=pos)
        return out.last_hidden_state

    # ---- building / saving ---------------------------------------------------------------------
    @classmethod
    def from_config(cls, config) -> BertBackbone:
        """Random weights from a transformers config (tests, or before load_state_dict); a pruned model's
        head counts per layer (config ``rerankers_attention_heads``) are applied (models/prune.py)."""
        from transformers import AutoModel
        _check_family(config)
        model = AutoModel.from_config(config)
        apply_saved_heads(model)
        return cls(model)

    @classmethod
    def from_pretrained(cls, path: str | Path, strict: bool = False) -> BertBackbone:
        """Strictly load a local transformers folder (config.json + safetensors/bin weights).

        The folder may hold a base model (``BertModel``), a pretraining model (``BertForPreTraining``:
        its heads are ignored) or a ``*ForSequenceClassification`` model (its head is read by
        :func:`read_classification_head`). Missing encoder weights raise CheckpointMismatchError;
        with ``strict`` (our own saved folders) so do unexpected ones.
        """
        from transformers import AutoConfig
        path = Path(path)
        config = AutoConfig.from_pretrained(str(path))
        backbone = cls.from_config(config)
        state = read_state_dict(path)
        enc_state = _strip_encoder_prefix(state, backbone.model)
        missing, unexpected, mismatched = compare_keys(backbone.model.state_dict(), enc_state)
        if missing or mismatched or (strict and unexpected):
            raise CheckpointMismatchError(missing, unexpected if strict else (), mismatched, source=str(path))
        backbone.model.load_state_dict({k: v for k, v in enc_state.items() if k not in unexpected}, strict=False)
        return backbone

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json + model.safetensors (a transformers base-model folder)."""
        write_transformers_folder(self.model, directory)


def _check_family(config) -> None:
    if config.model_type not in BERT_FAMILY:
        raise ModelConfigError(f"model_type {config.model_type!r} is not in the BERT family "
                               f"({', '.join(BERT_FAMILY)})")


def _strip_encoder_prefix(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Keys of a base model from a base/pretraining/classification checkpoint ("bert.x" -> "x")."""
    own = set(model.state_dict().keys())
    prefix = getattr(model, "base_model_prefix", "") + "."
    if prefix != "." and any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    # legacy checkpoints keep LayerNorm as gamma/beta
    fixed = {}
    for k, v in state.items():
        k2 = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        fixed[k2] = v
    # non-persistent buffers (position_ids) may be present in old checkpoints
    return {k: v for k, v in fixed.items() if k in own or not k.endswith("position_ids")}


def read_classification_head(path: str | Path) -> dict | None:
    """The head of a ``*ForSequenceClassification`` folder as {"activation", "dense.*", "out_proj.*"}.

    BERT:    pooler.dense (tanh) + classifier          -> dense, out_proj, activation "tanh"
    ELECTRA: classifier.dense (gelu) + classifier.out_proj -> activation "gelu"
    RoBERTa: classifier.dense (tanh) + classifier.out_proj -> activation "tanh"
    Returns None where the folder holds no such head (a base model). A classifier of two labels (a binary
    relevance classifier: 0 = not relevant, 1 = relevant) becomes one output scoring
    ``logit[1] - logit[0]``, the log-odds of label 1 (it ranks as softmax(logits)[1] does, and stays a
    logit for the losses); more labels raise ModelConfigError.
    """
    from transformers import AutoConfig
    path = Path(path)
    config = AutoConfig.from_pretrained(str(path))
    archs = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        return None
    state = read_state_dict(path)
    pre = config.model_type.replace("-", "_") if config.model_type != "xlm-roberta" else "roberta"
    if "classifier.out_proj.weight" in state:  # ELECTRA / RoBERTa head
        head = {"dense.weight": state["classifier.dense.weight"], "dense.bias": state["classifier.dense.bias"],
                "out_proj.weight": state["classifier.out_proj.weight"],
                "out_proj.bias": state["classifier.out_proj.bias"]}
        act = "gelu" if config.model_type == "electra" else "tanh"
    elif "classifier.weight" in state and f"{pre}.pooler.dense.weight" in state:  # BERT
        head = {"dense.weight": state[f"{pre}.pooler.dense.weight"], "dense.bias": state[f"{pre}.pooler.dense.bias"],
                "out_proj.weight": state["classifier.weight"], "out_proj.bias": state["classifier.bias"]}
        act = "tanh"
    else:
        raise ModelConfigError(f"{path}: a sequence-classification checkpoint whose head this loader does not "
                               f"know (keys: {[k for k in state if not k.startswith(pre + '.')][:8]})")
    outputs = head["out_proj.weight"].shape[0]
    if outputs == 2:  # binary classifier: score = logit(relevant) - logit(not relevant)
        head["out_proj.weight"] = (head["out_proj.weight"][1] - head["out_proj.weight"][0])[None]
        head["out_proj.bias"] = (head["out_proj.bias"][1] - head["out_proj.bias"][0])[None]
        logger.info("%s: a 2-label classifier; score = logit[1] - logit[0] (the log-odds of label 1)", path)
    elif outputs != 1:
        raise ModelConfigError(f"{path}: the classifier has {outputs} outputs; a cross-encoder scores with one "
                               "logit (num_labels=1) or two (num_labels=2: logit[1] - logit[0])")
    return {"activation": act, "state": head}


def pretrained_pooler(path: str | Path) -> dict[str, Tensor] | None:
    """BERT's pretrained pooler (dense) from a base checkpoint, to initialise a fresh head; else None."""
    state = read_state_dict(Path(path))
    for pre in ("", "bert.", "roberta.", "electra."):
        if f"{pre}pooler.dense.weight" in state:
            return {"dense.weight": state[f"{pre}pooler.dense.weight"], "dense.bias": state[f"{pre}pooler.dense.bias"]}
    return None


class BertAdapter(BackboneAdapter):
    """The registry's ``bert`` row: BERT, ELECTRA, RoBERTa, MiniLM cross-encoders."""

    kind = "bert"

    def pretrained(self, folder: Path, tokenizer) -> BertBackbone:
        return BertBackbone.from_pretrained(folder)

    def saved(self, folder: Path, cfg: dict[str, Any]) -> BertBackbone:
        return BertBackbone.from_pretrained(folder, strict=True)

    def random(self, config: dict[str, Any], tokenizer) -> BertBackbone:
        return BertBackbone.from_config(transformers_config(architecture(config, tokenizer)))

    def template(self, backbone: nn.Module, overrides: dict[str, Any]) -> TemplateConfig:
        """512 tokens or the model's positions, 64 query tokens; RoBERTa's layout without token types."""
        config = backbone.config
        roberta = config.model_type in _ROBERTA_TYPES
        fields = {"name": "bert", "max_length": min(512, position_limit(config)), "max_query_tokens": 64,
                  "pair_separators": 2 if roberta else 1,
                  "use_token_types": (not roberta) and config.type_vocab_size > 1, **overrides}
        template = make_template(fields)
        self.check_template(backbone, template, "")
        return template

    def check_template(self, backbone: nn.Module, template: TemplateConfig, where: str) -> None:
        limit = position_limit(backbone.config)
        if template.max_length > limit:
            prefix = f"{where}: " if where else ""
            raise ModelConfigError(f"{prefix}template max_length={template.max_length} exceeds the model's "
                                   f"{limit} positions")

    def fresh_head(self, backbone: nn.Module, activation: str | None) -> ScoreHead:
        """``dense -> tanh`` (BERT, RoBERTa) or ``-> gelu`` (ELECTRA) ``-> out_proj``, the config's dropout."""
        act = activation or ("gelu" if backbone.model_type == "electra" else "tanh")
        return ScoreHead(backbone.hidden_size, act, _classifier_dropout(backbone.config))

    def pretrained_head(self, backbone: nn.Module, folder: Path, activation: str | None,
                        name: str) -> tuple[ScoreHead, bool]:
        """A ``*ForSequenceClassification`` checkpoint's own head (trained), else a fresh one (untrained)
        whose dense layer starts from the pretrained pooler where there is one (tanh)."""
        published = read_classification_head(folder)
        if published is not None:
            head = ScoreHead(backbone.hidden_size, published["activation"], _classifier_dropout(backbone.config))
            head.load_state_dict(published["state"])
            logger.info("%s: loaded its sequence-classification head", name)
            return head, True
        head = self.fresh_head(backbone, activation)
        pooler = pretrained_pooler(folder) if head.activation == "tanh" else None
        if pooler is not None:
            head.load_state_dict(pooler, strict=False)
        logger.info("%s: fresh scoring head (%s)", name, head.activation)
        return head, False


def _classifier_dropout(config) -> float:
    p = getattr(config, "classifier_dropout", None)
    return float(p if p is not None else getattr(config, "hidden_dropout_prob", 0.1))


def export_sequence_classification(model, directory: str | Path) -> Path:
    """Write a BERT-family CrossEncoder as a transformers ``*ForSequenceClassification`` folder (one logit).

    The inverse of :func:`read_classification_head`: the encoder's weights under the model-type prefix, the head
    as BERT's pooler + classifier (tanh) or ELECTRA's / RoBERTa's ``classifier.dense`` + ``classifier.out_proj``,
    and the tokenizer. ``AutoModelForSequenceClassification.from_pretrained(directory)`` (and
    sentence-transformers' ``CrossEncoder``) then give the same logits for the same token ids. Only [CLS]
    pooling with the family's own head activation has such a form: anything else is a ModelConfigError.
    """
    from transformers import AutoModelForSequenceClassification

    if model.backbone_type != "bert" or model.pooling != "cls":
        raise ModelConfigError(f"export: only a BERT-family cross-encoder with [CLS] pooling has a "
                               f"sequence-classification form (this one: {model.backbone_type}, {model.pooling})")
    if getattr(model.backbone.config, HEADS_KEY, None) is not None:
        raise ModelConfigError("export: a model with pruned attention heads has no transformers form (its layers "
                               "have fewer heads than the config's num_attention_heads)")
    mt = model.backbone.model_type
    want = "gelu" if mt == "electra" else "tanh"
    if model.head.activation != want:
        raise ModelConfigError(f"export: a {mt} classification head applies {want}, this head {model.head.activation}")
    config = copy.deepcopy(model.backbone.config)
    config.num_labels, config.architectures = 1, [f"{type(model.backbone.model).__name__.removesuffix('Model')}"
                                                  "ForSequenceClassification"]
    config.problem_type = "regression"
    config._attn_implementation = "sdpa"  # ours is registered with transformers in this process only
    target = AutoModelForSequenceClassification.from_config(config)
    pre = target.base_model_prefix
    head = {k: v.detach() for k, v in model.head.state_dict().items()}
    state = {f"{pre}.{k}": v.detach() for k, v in model.backbone.model.state_dict().items()}
    if hasattr(target, "classifier") and hasattr(target.classifier, "out_proj"):  # ELECTRA, RoBERTa
        state.update({f"classifier.{k}": v for k, v in head.items()})
    else:  # BERT: pooler (dense + tanh) + classifier
        state.update({f"{pre}.pooler.dense.weight": head["dense.weight"],
                      f"{pre}.pooler.dense.bias": head["dense.bias"],
                      "classifier.weight": head["out_proj.weight"], "classifier.bias": head["out_proj.bias"]})
    missing, unexpected = target.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointMismatchError(missing, unexpected, source=f"export of {mt}")
    write_transformers_folder(target, directory)
    model.tokenizer.save_pretrained(str(directory))
    return Path(directory)

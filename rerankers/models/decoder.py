"""Decoder-only Transformers (Pythia / GPT-NeoX, OPT, Qwen2, Llama) as packed causal backbones.

The decoder is transformers' own base model (``AutoModel`` of the config: ``GPTNeoXModel``,
``OPTModel``, ``Qwen2Model``, ``LlamaModel``) with its attention routed through a causal varlen
attention (:func:`rerankers.models.varlen_attention.varlen_attention` with ``causal=True``),
registered in transformers' AttentionInterface as ``rerankers_varlen_causal``:

- packed path (:meth:`DecoderBackbone.forward`): all S sequences in one row (1, T), per-sequence
  position ids (rotary embeddings follow from them; OPT's learned positions get their offset of 2
  inside the model), ``cu_seqlens`` / ``max_seqlen`` passed down to every attention call, so a token
  attends to the earlier tokens of its own pair only. No mask function is registered for that
  implementation, so transformers builds no (T, T) mask for it;
- padded path (:meth:`DecoderBackbone.forward_padded`): the model's own padded forward (SDPA, its
  causal + padding mask, positions as the model derives them) on right-padded rows -- the oracle.

Pooling is the last token (causal model), with the RankMamba template (``mamba``: the document
first, the query last, then EOS, so the pooled token is a fixed marker that has read both).
Checkpoints are transformers folders (a ``*ForCausalLM`` or a base model); loading is strict
about the decoder's weights, the LM head is ignored. :class:`DecoderAdapter` is the registry's
``decoder`` row.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

from torch import Tensor, nn

from rerankers.data.packing import PackedBatch
from rerankers.data.templates import TemplateConfig
from rerankers.errors import CheckpointMismatchError, ModelConfigError
from rerankers.kernels.varlen import right_padded_lengths
from rerankers.models.adapter import BackboneAdapter, architecture, make_template, transformers_config
from rerankers.models.checkpoint_files import compare_keys, read_state_dict, write_transformers_folder
from rerankers.models.registry import BACKBONES
from rerankers.models.varlen_attention import varlen_attention

logger = logging.getLogger(__name__)

DECODER_TYPES = BACKBONES["decoder"].model_types
ATTN_IMPLEMENTATION = "rerankers_varlen_causal"
PADDED_IMPLEMENTATION = "sdpa"
# LM heads of the causal-LM checkpoints: not part of the backbone
_LM_HEAD_KEYS = ("lm_head.weight", "lm_head.bias", "embed_out.weight")

#: incremented by every call of the registered attention function; DecoderBackbone checks it so that
#: a transformers version whose model bypasses the AttentionInterface fails loudly instead of running
#: without the per-sequence mask.
packed_calls = 0
_registered = False


def _causal_attention_forward(module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                              scaling: float | None = None, dropout: float = 0.0, **kwargs):
    """transformers attention function for packed rows. query (1, heads, T, d), key/value
    (1, kv_heads, T, d) -> ((1, T, heads, d), None); causal within each sequence of ``cu_seqlens``."""
    global packed_calls
    cu = kwargs.get("cu_seqlens")
    if cu is None:
        raise RuntimeError(f"the {ATTN_IMPLEMENTATION} attention runs packed batches only (cu_seqlens); "
                           "a padded forward goes through DecoderBackbone.forward_padded")
    if kwargs.get("sliding_window") is not None:
        raise ModelConfigError("sliding-window attention layers are not supported by the packed decoder path")
    if query.shape[0] != 1:
        raise ValueError(f"packed attention expects batch size 1 (all sequences in one row), got {query.shape[0]}")
    packed_calls += 1
    # (T, heads, d), token-major in memory: after rotary embeddings the views would be head-major
    q, k, v = (x.squeeze(0).transpose(0, 1).contiguous() for x in (query, key, value))  # squeeze: see varlen_attention
    groups = q.shape[1] // k.shape[1]
    if groups > 1:  # grouped-query attention: each key/value head serves `groups` consecutive query heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    out = varlen_attention(q, k, v, cu, int(kwargs["max_seqlen"]), scale=scaling, dropout_p=dropout, causal=True)
    return out.unsqueeze(0), None


def register_causal_attention() -> str:
    """Register ``rerankers_varlen_causal`` in transformers' AttentionInterface (idempotent). No mask
    function on purpose: transformers then passes no mask (and builds none) to it."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        AttentionInterface.register(ATTN_IMPLEMENTATION, _causal_attention_forward)
        _registered = True
    return ATTN_IMPLEMENTATION


def _check_supported(config) -> None:
    if config.model_type not in DECODER_TYPES:
        raise ModelConfigError(f"model_type {config.model_type!r} is not a supported decoder "
                               f"({', '.join(DECODER_TYPES)})")
    layer_types = getattr(config, "layer_types", None) or ()
    if getattr(config, "use_sliding_window", False) or any(t != "full_attention" for t in layer_types):
        raise ModelConfigError(f"{config.model_type}: sliding-window attention layers are not supported by the "
                               "packed decoder path (set use_sliding_window=false)")


def output_size(config) -> int:
    """The size of the decoder's last hidden states: OPT projects them back to ``word_embed_proj_dim``."""
    if config.model_type == "opt":
        return int(config.word_embed_proj_dim)
    return int(config.hidden_size)


def position_limit(config) -> int:
    """The longest sequence the decoder takes (its positions; OPT's offset of 2 is on top of them)."""
    return int(config.max_position_embeddings)


class DecoderBackbone(nn.Module):
    """A transformers decoder-only base model: PackedBatch -> hidden states (T, H).

    Attributes:
        model:        the transformers base model (GPTNeoXModel, OPTModel, Qwen2Model, LlamaModel)
        hidden_size:  H, the size of the last hidden states
        pooling:      "last"
    """

    pooling = BACKBONES["decoder"].pooling

    def __init__(self, model: nn.Module):
        super().__init__()
        _check_supported(model.config)
        self.model = model
        self.model.config._attn_implementation = register_causal_attention()
        self.hidden_size = output_size(model.config)

    @property
    def config(self):
        return self.model.config

    @property
    def model_type(self) -> str:
        return str(self.model.config.model_type)

    @property
    def pad_token_id(self) -> int:
        """The id right padding uses (never attended to by a real token of a causal model)."""
        for key in ("pad_token_id", "eos_token_id"):
            tid = getattr(self.model.config, key, None)
            if isinstance(tid, (list, tuple)):
                tid = tid[0] if tid else None
            if tid is not None:
                return int(tid)
        return 0

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    # ---- forward paths -------------------------------------------------------------------------
    def forward(self, batch: PackedBatch) -> Tensor:
        """Packed path: PackedBatch (T tokens, S sequences) -> last hidden states (T, H)."""
        before = packed_calls
        out = self.model(input_ids=batch.input_ids[None], position_ids=batch.position_ids[None], use_cache=False,
                         cu_seqlens=batch.cu_seqlens, max_seqlen=int(batch.max_seqlen))
        if packed_calls == before and self.config.num_hidden_layers > 0:
            raise RuntimeError(f"the packed {self.model_type} path needs a transformers version whose models call "
                               "the AttentionInterface with extra keyword arguments (transformers >= 5); this one "
                               "bypassed it, which would attend across pairs")
        return out.last_hidden_state[0]

    def forward_padded(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """The model's own padded forward: input_ids, attention_mask (S, L), right-padded -> (S, L, H).

        Positions are the model's own (from 0 at each row's start; OPT derives them from the mask).
        ``token_type_ids``: unused, taken so that every backbone's padded path has the same arguments.
        """
        right_padded_lengths(input_ids, attention_mask)
        with self._attention(PADDED_IMPLEMENTATION):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask.long(), use_cache=False)
        return out.last_hidden_state

    @contextlib.contextmanager
    def _attention(self, implementation: str) -> Iterator[None]:
        """The model runs ``implementation`` inside (transformers reads it from the config on every call)."""
        config = self.model.config
        previous = config._attn_implementation
        config._attn_implementation = implementation
        try:
            yield
        finally:
            config._attn_implementation = previous

    # ---- building / saving ---------------------------------------------------------------------
    @classmethod
    def from_config(cls, config) -> DecoderBackbone:
        """Random weights from a transformers config."""
        from transformers import AutoModel
        _check_supported(config)
        return cls(AutoModel.from_config(config))

    @classmethod
    def from_pretrained(cls, path: str | Path, strict: bool = False) -> DecoderBackbone:
        """Load a local transformers folder (config.json + safetensors/bin weights) of a causal LM
        (``GPTNeoXForCausalLM``, ``OPTForCausalLM``, ...; its LM head is ignored) or of a base model.

        Missing decoder weights raise CheckpointMismatchError; with ``strict`` (our own saved folders)
        so do unexpected ones; otherwise they are logged and ignored (old buffers such as
        ``attention.masked_bias``, the LM head).
        """
        from transformers import AutoConfig
        path = Path(path)
        config = AutoConfig.from_pretrained(str(path))
        if config.model_type not in DECODER_TYPES:
            raise ModelConfigError(f"{path}: model_type {config.model_type!r} is not a supported decoder "
                                   f"({', '.join(DECODER_TYPES)})")
        backbone = cls.from_config(config)
        state = _strip_base_prefix(read_state_dict(path), backbone.model)
        missing, unexpected, mismatched = compare_keys(backbone.model.state_dict(), state)
        if missing or mismatched or (strict and unexpected):
            raise CheckpointMismatchError(missing, unexpected if strict else (), mismatched, source=str(path))
        ignored = [k for k in unexpected if k not in _LM_HEAD_KEYS]
        if ignored:
            logger.info("%s: ignoring %d tensors the decoder does not use: %s", path, len(ignored), ignored[:5])
        backbone.model.load_state_dict({k: v for k, v in state.items() if k not in unexpected}, strict=False)
        return backbone

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json + model.safetensors (a transformers base-model folder)."""
        write_transformers_folder(self.model, directory)


def _strip_base_prefix(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Keys of the base model from a causal-LM checkpoint ("gpt_neox.x" / "model.x" -> "x")."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    if prefix != "." and any(k.startswith(prefix) for k in state):
        return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
    return state


def ensure_pad_token(tokenizer) -> None:
    """Give a tokenizer without a padding token its EOS as one (decoder tokenizers often have none)."""
    if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("the tokenizer has no padding token: padding with its EOS %r", tokenizer.eos_token)


class DecoderAdapter(BackboneAdapter):
    """The registry's ``decoder`` row: Pythia, OPT, Qwen2, Llama rerankers (last token, Linear head)."""

    kind = "decoder"

    def pretrained(self, folder: Path, tokenizer) -> DecoderBackbone:
        ensure_pad_token(tokenizer)
        return DecoderBackbone.from_pretrained(folder)

    def saved(self, folder: Path, cfg: dict[str, Any]) -> DecoderBackbone:
        return DecoderBackbone.from_pretrained(folder, strict=True)

    def random(self, config: dict[str, Any], tokenizer) -> DecoderBackbone:
        """The vocabulary and special ids follow ``tokenizer``; a padding token that is the EOS gets no
        embedding row of its own (``padding_idx`` would freeze the EOS row that the model pools)."""
        ensure_pad_token(tokenizer)
        arch = architecture(config, tokenizer)
        if arch.get("pad_token_id") is not None and arch.get("pad_token_id") == arch.get("eos_token_id"):
            arch["pad_token_id"] = None
        return DecoderBackbone.from_config(transformers_config(arch))

    def template(self, backbone: nn.Module, overrides: dict[str, Any]) -> TemplateConfig:
        """The RankMamba template (document, query, EOS), 512 tokens or the model's positions, 64 query tokens."""
        fields = {"name": self.spec.template, "max_length": min(512, position_limit(backbone.config)),
                  "max_query_tokens": 64, **overrides}
        template = make_template(fields)
        self.check_template(backbone, template, "")
        return template

    def check_template(self, backbone: nn.Module, template: TemplateConfig, where: str) -> None:
        limit = position_limit(backbone.config)
        if template.max_length > limit:
            prefix = f"{where}: " if where else ""
            raise ModelConfigError(f"{prefix}template max_length={template.max_length} exceeds the model's "
                                   f"{limit} positions")

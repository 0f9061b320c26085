"""A bidirectional LSTM baseline over packed sequences (the seed's BERT vs T5 vs LSTM vs Mamba row).

    token ids (T,) --embedding--> (T, E) --dropout--> BiLSTM (num_layers, hidden H per direction)
        --> states (T, 2H) = [forward | backward]  --"ends" pooling--> (S, 2H) --Linear head--> (S,)

The LSTM runs on a :class:`torch.nn.utils.rnn.PackedSequence` built from ``cu_seqlens`` (each pair
alone, from a zero state; nothing reads padding or another pair). Pooling ("ends", see
:func:`rerankers.models.cross_encoder.bidirectional_ends`) puts the forward direction's final state
(at the last token) beside the backward direction's (at the first token): the concatenation of the
last layer's final states, ``h_n``, of both directions.

The model is ours: its config (:class:`LSTMConfig`) is saved as config.json with ``model_type``
``rerankers-lstm`` beside model.safetensors. The embedding table starts random, or (a preset built
with init="pretrained") as a copy of the input embeddings of the preset's checkpoint (e.g. BERT's
word-piece embeddings, with BERT's tokenizer). :class:`LSTMAdapter` is the registry's ``lstm`` row.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils.checkpoint import checkpoint

from rerankers.data.packing import PackedBatch
from rerankers.data.templates import TemplateConfig
from rerankers.errors import CheckpointMismatchError, ModelConfigError
from rerankers.kernels.varlen import position_ids_from_cu_seqlens, right_padded_lengths, sequence_ids
from rerankers.models.adapter import BackboneAdapter, make_template
from rerankers.models.checkpoint_files import compare_keys, read_state_dict
from rerankers.models.mamba_loading import write_checkpoint
from rerankers.models.registry import BACKBONES, read_config_json

logger = logging.getLogger(__name__)

__all__ = ["LSTMAdapter", "LSTMBackbone", "LSTMConfig", "input_embeddings"]

MODEL_TYPE = BACKBONES["lstm"].model_types[0]
# input-embedding keys of the checkpoint formats the embeddings are copied from, most specific first:
# BERT family, Llama/Qwen2/OPT, GPT-NeoX, T5, GPT-2, Mamba (transformers / mamba_ssm)
_EMBEDDING_SUFFIXES = ("word_embeddings.weight", "embed_tokens.weight", "embed_in.weight", "shared.weight",
                       "wte.weight", "embeddings.weight", "embedding.weight")


@dataclass
class LSTMConfig:
    """The BiLSTM's shape (config.json).

    vocab_size:       rows of the embedding table
    embedding_size:   E, the embedding width (the LSTM's input)
    hidden_size:      H, per direction (the pooled state is 2H)
    num_layers:       stacked bidirectional layers
    dropout:          on the embeddings and between layers (training only)
    pad_token_id:     the tokenizer's padding id (padding is never read; kept for the padded oracle)
    embeddings_from:  where the initial embedding table was copied from (None: random); informational
    model_type:       always ``rerankers-lstm``
    """

    vocab_size: int
    embedding_size: int = 768
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.1
    pad_token_id: int | None = 0
    embeddings_from: str | None = None
    model_type: str = MODEL_TYPE

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embedding_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelConfigError(f"lstm config: {name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ModelConfigError(f"lstm config: dropout must lie in [0, 1), got {self.dropout!r}")
        if self.model_type != MODEL_TYPE:
            raise ModelConfigError(f"lstm config: model_type must be {MODEL_TYPE!r}, got {self.model_type!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "lstm config") -> LSTMConfig:
        """Strict: an unknown key is a ModelConfigError naming ``where`` (a file), never ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; known: "
                                   f"{', '.join(sorted(known))}")
        if "vocab_size" not in d:
            raise ModelConfigError(f"{where}: missing key 'vocab_size'")
        try:
            return cls(**d)
        except ModelConfigError as e:
            raise ModelConfigError(f"{where}: {e}") from None


class LSTMBackbone(nn.Module):
    """Bidirectional multi-layer LSTM: PackedBatch -> per-token states (T, 2H), [forward | backward].

    Attributes: ``config`` (LSTMConfig), ``hidden_size`` (2H, the head's input), ``pooling = "ends"``,
    ``gradient_checkpointing`` (recompute the LSTM in backward, keeping only its input).
    """

    pooling = BACKBONES["lstm"].pooling

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.config = config
        self.hidden_size = 2 * config.hidden_size
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.embedding_size, config.hidden_size, num_layers=config.num_layers,
                            bidirectional=True, batch_first=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.gradient_checkpointing = False

    @property
    def pad_token_id(self) -> int:
        return int(self.config.pad_token_id or 0)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embedding

    # ---- forward paths -------------------------------------------------------------------------
    def forward(self, batch: PackedBatch) -> Tensor:
        """Packed path: PackedBatch (T tokens, S sequences) -> states (T, 2H)."""
        x = self.dropout(self.embedding(batch.input_ids))  # (T, E)
        cu = batch.cu_seqlens.to(x.device)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self._run_packed, x, cu, use_reentrant=False)
        return self._run_packed(x, cu)

    def _run_packed(self, x: Tensor, cu_seqlens: Tensor) -> Tensor:
        """x (T, E), cu_seqlens (S+1,) -> (T, 2H): one PackedSequence of the S sequences through the LSTM."""
        T = x.shape[0]
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).cpu()  # pack_padded_sequence takes CPU lengths
        seq, pos = sequence_ids(cu_seqlens, T), position_ids_from_cu_seqlens(cu_seqlens, T)
        padded = x.new_zeros(lengths.numel(), int(lengths.max()), x.shape[1])
        padded[seq, pos] = x  # (S, L, E); padding is cut off again by the packing
        packed = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=padded.shape[1])
        return out[seq, pos]

    def forward_padded(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Right-padded rows -> (S, L, 2H), zeros at padding: each row's real tokens through the LSTM alone
        (a plain batch of one, no packing) -- the oracle of :meth:`forward`. ``token_type_ids``: unused."""
        lengths = right_padded_lengths(input_ids, attention_mask)
        S, L = input_ids.shape
        out = torch.zeros(S, L, self.hidden_size, dtype=self.embedding.weight.dtype, device=input_ids.device)
        for i, n in enumerate(lengths.tolist()):
            if n:
                out[i, :n] = self.lstm(self.dropout(self.embedding(input_ids[i, :n]))[None])[0][0]
        return out

    # ---- building / saving ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path) -> LSTMBackbone:
        """Strictly load a folder written by :meth:`save_pretrained` (config.json + weights)."""
        folder = Path(folder)
        config = LSTMConfig.from_dict(read_config_json(folder), str(folder / "config.json"))
        model = cls(config)
        state = read_state_dict(folder)
        missing, unexpected, mismatched = compare_keys(model.state_dict(), state)
        if missing or unexpected or mismatched:
            raise CheckpointMismatchError(missing, unexpected, mismatched, source=str(folder))
        model.load_state_dict(state)
        return model

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json + model.safetensors (each file atomically)."""
        write_checkpoint(Path(directory), self.config.to_dict(), self.state_dict())


def input_embeddings(folder: Path) -> Tensor:
    """The input-embedding matrix (V, E) of a checkpoint folder (BERT, decoder, T5, Mamba formats)."""
    state = read_state_dict(folder)
    for suffix in _EMBEDDING_SUFFIXES:
        keys = [k for k in state if k == suffix or k.endswith("." + suffix)]
        keys = [k for k in keys if "position" not in k and "token_type" not in k]
        if len(keys) == 1 and state[keys[0]].dim() == 2:
            return state[keys[0]]
        if len(keys) > 1:
            raise ModelConfigError(f"{folder}: several input-embedding tensors ({', '.join(keys)}); "
                                   "copy one by hand")
    raise ModelConfigError(f"{folder}: no input-embedding tensor found (looked for keys ending in "
                           f"{', '.join(_EMBEDDING_SUFFIXES)})")


def _shape(config: dict[str, Any], tokenizer, where: str) -> LSTMConfig:
    """An LSTMConfig of ``config``'s shape whose vocabulary and padding id follow ``tokenizer``."""
    fields_ = {k: v for k, v in config.items() if k not in ("architectures", "transformers_version")}
    fields_.update(vocab_size=len(tokenizer), pad_token_id=getattr(tokenizer, "pad_token_id", None),
                   embeddings_from=None)
    return LSTMConfig.from_dict(fields_, where)


class LSTMAdapter(BackboneAdapter):
    """The registry's ``lstm`` row: a BiLSTM with a Linear head on its two final states; pairs in the
    ``bert`` layout without token types ([CLS] q [SEP] d [SEP], read in both directions)."""

    kind = "lstm"

    def pretrained(self, folder: Path, tokenizer) -> LSTMBackbone:
        return LSTMBackbone.from_pretrained(folder)

    def saved(self, folder: Path, cfg: dict[str, Any]) -> LSTMBackbone:
        return LSTMBackbone.from_pretrained(folder)  # always strict

    def random(self, config: dict[str, Any], tokenizer) -> LSTMBackbone:
        return LSTMBackbone(_shape(config, tokenizer, "lstm config"))

    def from_preset(self, preset, folder: Path, tokenizer) -> LSTMBackbone:
        """The preset's shape, its embedding table copied from the input embeddings of ``folder`` (the
        preset's checkpoint, whose tokenizer it uses); the LSTM layers start random."""
        if (folder / "config.json").is_file() and read_config_json(folder).get("model_type") == MODEL_TYPE:
            return self.pretrained(folder, tokenizer)
        table = input_embeddings(folder)
        config = _shape(preset.config_dict(), tokenizer, f"preset {preset.name!r}")
        if table.shape[0] < config.vocab_size:
            raise ModelConfigError(f"{folder}: its input embeddings have {table.shape[0]} rows, fewer than the "
                                   f"tokenizer's {config.vocab_size} tokens")
        config.vocab_size, config.embedding_size, config.embeddings_from = (int(table.shape[0]), int(table.shape[1]),
                                                                            preset.source)
        backbone = LSTMBackbone(config)
        with torch.no_grad():
            backbone.embedding.weight.copy_(table.float())
        logger.info("%s: embedding table (%d x %d) copied from %s", preset.name, *table.shape, preset.source)
        return backbone

    def template(self, backbone: nn.Module, overrides: dict[str, Any]) -> TemplateConfig:
        return make_template({"name": self.spec.template, "max_length": 512, "max_query_tokens": 64,
                              "use_token_types": False, **overrides})


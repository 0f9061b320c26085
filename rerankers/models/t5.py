"""monoT5-style scorer: a T5 encoder-decoder reads ``Query: q Document: d Relevant:`` and the first
decoder step's logits of the "true" and "false" tokens give the score, log p(true) over the two.

T5's relative position bias rules out plain varlen flash attention, so this backbone pads: the
packed entry point (:meth:`T5Backbone.forward`) unpacks the PackedBatch to a right-padded
(S, L) batch with a padding mask; each sequence is then independent of the others (tested).
:class:`T5Adapter` is the registry's ``t5`` row: no head, the token ids of "true" / "false" saved.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rerankers.data.packing import PackedBatch
from rerankers.errors import CheckpointMismatchError, ModelConfigError
from rerankers.models.adapter import BackboneAdapter, architecture, transformers_config
from rerankers.models.checkpoint_files import compare_keys, read_state_dict, write_transformers_folder
from rerankers.models.heads import true_false_score
from rerankers.models.registry import BACKBONES

logger = logging.getLogger(__name__)


def tied_aliases(model: nn.Module) -> dict[str, set[str]]:
    """state_dict key -> all keys sharing its storage (tied weights, e.g. T5's shared/lm_head)."""
    groups: dict[int, set[str]] = {}
    sd = model.state_dict()
    for k, v in sd.items():
        groups.setdefault(v.data_ptr(), set()).add(k)
    return {k: groups[v.data_ptr()] for k, v in sd.items()}


class T5Backbone(nn.Module):
    """T5ForConditionalGeneration scoring with two vocabulary entries.

    Attributes:
        model:           transformers T5ForConditionalGeneration
        true_token_id:   vocabulary id of "true" (t5-base: 1176, "▁true")
        false_token_id:  vocabulary id of "false" (t5-base: 6136)
        pooling:         "t5" (the backbone gives (S, 2) logits, not per-token states)
    """

    pooling = BACKBONES["t5"].pooling

    def __init__(self, model: nn.Module, true_token_id: int, false_token_id: int):
        super().__init__()
        if model.config.model_type not in BACKBONES["t5"].model_types:
            raise ModelConfigError(f"model_type {model.config.model_type!r} is not T5")
        self.model = model
        self.model.config._attn_implementation = "eager"  # T5's position bias: eager or sdpa, both exact
        self.true_token_id = int(true_token_id)
        self.false_token_id = int(false_token_id)
        self.hidden_size = int(model.config.d_model)

    @property
    def config(self):
        return self.model.config

    def get_input_embeddings(self) -> nn.Module:
        """The encoder's token embedding (its weight is shared with the decoder's and the LM head's)."""
        return self.model.encoder.embed_tokens

    @property
    def pad_token_id(self) -> int:
        return int(self.model.config.pad_token_id or 0)

    def forward(self, batch: PackedBatch) -> Tensor:
        """PackedBatch of S sequences -> (S, 2) logits of [true, false] (padded internally)."""
        ids, mask, _ = batch.to_padded(self.pad_token_id)
        return self.forward_padded(ids, mask)

    def forward_padded(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """input_ids, attention_mask (S, L) -> (S, 2) logits of [true, false] at the first decoder step.

        ``token_type_ids``: unused (T5 has no segments); taken so that every backbone's padded path
        has the same arguments."""
        start = self.model.config.decoder_start_token_id
        start = self.pad_token_id if start is None else int(start)
        dec = torch.full((input_ids.shape[0], 1), start, dtype=torch.long, device=input_ids.device)
        seen: list[Tensor] = []  # the LM head's input: the decoder state, scaled as this T5 version does
        hook = self.model.lm_head.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0]))
        try:
            self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=dec, use_cache=False)
        finally:
            hook.remove()
        # the two logits in at least fp32 even under autocast: bf16 logits (8 significant bits) would
        # quantise log p(true) into steps of ~0.1 and tie documents in a ranking
        rows = self.model.lm_head.weight[[self.true_token_id, self.false_token_id]]  # (2, d)
        dtype = torch.promote_types(rows.dtype, torch.float32)
        with torch.autocast(input_ids.device.type, enabled=False):
            return seen[0][:, 0].to(dtype) @ rows.to(dtype).T

    @classmethod
    def from_config(cls, config, true_token_id: int, false_token_id: int) -> "T5Backbone":
        from transformers import T5ForConditionalGeneration
        return cls(T5ForConditionalGeneration(config), true_token_id, false_token_id)

    @classmethod
    def from_pretrained(cls, path: str | Path, true_token_id: int, false_token_id: int,
                        strict: bool = False) -> "T5Backbone":
        """Load a local T5ForConditionalGeneration folder: every weight the model needs must be there
        (tied weights may be stored once); extra tensors are ignored (logged)."""
        from transformers import AutoConfig
        path = Path(path)
        config = AutoConfig.from_pretrained(str(path))
        if config.model_type not in BACKBONES["t5"].model_types:
            raise ModelConfigError(f"{path}: model_type {config.model_type!r} is not T5")
        backbone = cls.from_config(config, true_token_id, false_token_id)
        state = read_state_dict(path)
        own = backbone.model.state_dict()
        missing, unexpected, mismatched = compare_keys(own, state)
        aliases = tied_aliases(backbone.model)
        missing = [k for k in missing if not any(a in state for a in aliases[k])]
        if missing or mismatched or (strict and unexpected):
            raise CheckpointMismatchError(missing, unexpected if strict else (), mismatched, source=str(path))
        if unexpected:
            logger.info("%s: ignoring %d tensors the model does not use: %s", path, len(unexpected), unexpected[:5])
        backbone.model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        return backbone

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json + model.safetensors (a transformers folder)."""
        write_transformers_folder(self.model, directory)


def true_false_ids(tokenizer) -> tuple[int, int]:
    """Vocabulary ids of "true" and "false": the first token of each word as the tokenizer splits it."""
    ids = []
    for word in ("true", "false"):
        toks = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not toks:
            raise ModelConfigError(f"tokenizer has no token for {word!r}: it cannot serve a monoT5 scorer")
        ids.append(int(toks[0]))
    return ids[0], ids[1]


class T5Adapter(BackboneAdapter):
    """The registry's ``t5`` row: monoT5 scorers (no head; score = log p(true) over true/false)."""

    kind = "t5"

    def pretrained(self, folder: Path, tokenizer) -> T5Backbone:
        return T5Backbone.from_pretrained(folder, *true_false_ids(tokenizer))

    def saved(self, folder: Path, cfg: dict[str, Any]) -> T5Backbone:
        return T5Backbone.from_pretrained(folder, cfg["true_token_id"], cfg["false_token_id"], strict=True)

    def random(self, config: dict[str, Any], tokenizer) -> T5Backbone:
        """The decoder starts from the padding token, as T5's pretraining has it."""
        arch = architecture(config, tokenizer)
        arch["decoder_start_token_id"] = arch.get("pad_token_id", 0)
        return T5Backbone.from_config(transformers_config(arch), *true_false_ids(tokenizer))

    def saved_fields(self, backbone: nn.Module) -> dict[str, Any]:
        return {"true_token_id": backbone.true_token_id, "false_token_id": backbone.false_token_id}

    def score(self, output: Tensor) -> Tensor:
        """(S, 2) logits of [true, false] -> (S,) log p(true) over the two."""
        return true_false_score(output)

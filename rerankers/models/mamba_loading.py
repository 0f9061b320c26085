"""Strictly matching and writing Mamba-1 checkpoints (both formats; finding and reading the files:
:mod:`rerankers.models.presets` and :mod:`rerankers.models.checkpoint_files`).

Checkpoint keys (``N`` = layer index)::

    transformers:  backbone.embeddings.weight, backbone.layers.N.norm.weight,
                   backbone.layers.N.mixer.{in_proj,conv1d,x_proj,dt_proj,out_proj}.*,
                   backbone.layers.N.mixer.{A_log,D}, backbone.norm_f.weight, [lm_head.weight]
    mamba_ssm:     backbone.embedding.weight, ... the same ..., lm_head.weight

Our module's keys are those without ``backbone.`` and with ``embedding``. The language-model head
is tied to the embedding (or, untied, unused by a reranker): ``lm_head.weight`` is dropped
explicitly; every other key must match exactly (names and shapes), else
:class:`CheckpointMismatchError` names the offending keys in the checkpoint's own spelling.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from rerankers.errors import CheckpointMismatchError
from rerankers.models.checkpoint_files import SAFETENSORS_NAME
from rerankers.utils.io import atomic_path, atomic_write

logger = logging.getLogger(__name__)

BACKBONE_PREFIX = "backbone."
LM_HEAD_KEY = "lm_head.weight"


# -------------------------------------------------------------------------------------------------
# matching keys
# -------------------------------------------------------------------------------------------------
@dataclass
class NormalizedCheckpoint:
    """A checkpoint's tensors under our module's keys.

    tensors:    our key -> tensor
    original:   our key -> the checkpoint's key
    foreign:    checkpoint keys that can be no key of ours (outside ``backbone.``, duplicates)
    lm_head:    the dropped ``lm_head.weight`` or None
    prefix:     "backbone." where the checkpoint uses it, else ""
    embedding_name: "embeddings" (transformers) or "embedding" (mamba_ssm)
    """

    tensors: dict[str, Tensor]
    original: dict[str, str]
    foreign: list[str]
    lm_head: Tensor | None
    prefix: str
    embedding_name: str

    def spell(self, our_key: str) -> str:
        """Our key in the checkpoint's spelling (to name a key in an error)."""
        if our_key in self.original:
            return self.original[our_key]
        if our_key == "embedding.weight":
            return f"{self.prefix}{self.embedding_name}.weight"
        return self.prefix + our_key


def normalize_keys(state: dict[str, Tensor], embedding_name: str = "embeddings") -> NormalizedCheckpoint:
    """Checkpoint keys -> our module's keys (strip ``backbone.``, embeddings -> embedding, drop lm_head).

    ``embedding_name`` is the spelling used to report a missing embedding when the checkpoint
    has none ("embeddings" for transformers, "embedding" for mamba_ssm).
    """
    has_prefix = any(k.startswith(BACKBONE_PREFIX) for k in state)
    ckpt = NormalizedCheckpoint({}, {}, [], None, BACKBONE_PREFIX if has_prefix else "", embedding_name)
    for key, tensor in state.items():
        if key == LM_HEAD_KEY:
            ckpt.lm_head = tensor
            continue
        if has_prefix and not key.startswith(BACKBONE_PREFIX):
            ckpt.foreign.append(key)
            continue
        name = key[len(BACKBONE_PREFIX):] if has_prefix else key
        if name in ("embeddings.weight", "embedding.weight"):
            ckpt.embedding_name = name.split(".")[0]
            name = "embedding.weight"
        if name in ckpt.tensors:  # both spellings of the embedding
            ckpt.foreign.append(key)
            continue
        ckpt.tensors[name] = tensor
        ckpt.original[name] = key
    return ckpt


def load_strict(model: nn.Module, state: dict[str, Tensor], source: str, dtype: torch.dtype,
                embedding_name: str = "embeddings") -> None:
    """Copy ``state`` (checkpoint keys) into ``model`` (possibly on the meta device) strictly.

    Floating tensors are cast to ``dtype``. Raises CheckpointMismatchError naming the missing,
    unexpected and wrong-shape keys in the checkpoint's spelling.
    """
    ckpt = normalize_keys(state, embedding_name)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [ckpt.spell(k) for k in expected if k not in ckpt.tensors]
    unexpected = ckpt.foreign + [ckpt.original[k] for k in ckpt.tensors if k not in expected]
    mismatched = [(ckpt.original[k], tuple(t.shape), expected[k]) for k, t in ckpt.tensors.items()
                  if k in expected and tuple(t.shape) != expected[k]]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(missing, unexpected, mismatched, source=source)
    if ckpt.lm_head is not None:
        emb = ckpt.tensors["embedding.weight"]
        tied = ckpt.lm_head.shape == emb.shape and torch.equal(ckpt.lm_head, emb)
        logger.info("%s: dropped lm_head.weight (%s; a reranker scores from hidden states)",
                    source, "equal to the embedding" if tied else "untied, unused")
    cast = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in ckpt.tensors.items()}
    model.load_state_dict(cast, strict=True, assign=True)


# -------------------------------------------------------------------------------------------------
# writing
# -------------------------------------------------------------------------------------------------
def write_checkpoint(directory: Path, config_dict: dict, state: dict[str, Tensor]) -> None:
    """config.json + model.safetensors into ``directory`` (created), each written atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(directory / SAFETENSORS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    with atomic_write(directory / "config.json") as f:
        f.write(json.dumps(config_dict, indent=2, sort_keys=True) + "\n")

"""Tiny Mamba and BERT backbones of (about) equal size, from scratch, over one word vocabulary.

What the demo trains on the CPU in seconds, and what a from-scratch comparison needs when no
pretrained weights are reachable: a folder with ``config.json``, random weights and a word-level
tokenizer (:mod:`rerankers.data.word_tokenizer`) built from the training texts, that
``rerank train --backbone FOLDER`` (or ``CrossEncoder.from_backbone``) loads like any checkpoint.
The sizes are chosen so that both backbones hold about the same number of non-embedding parameters
(:data:`TINY_SHAPES`; :func:`rerankers.train.progress.count_parameters` reports them).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import torch

from rerankers.train.progress import count_parameters

logger = logging.getLogger(__name__)

# hidden 64 for both; 3 Mamba blocks (~32K parameters each) ~ 2 BERT layers (~50K each)
TINY_SHAPES = {
    "mamba": {"d_model": 64, "n_layer": 3, "d_state": 16, "expand": 2},
    "bert": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
             "max_position_embeddings": 256},
}


def save_tiny_backbone(kind: str, folder: str | Path, texts: Iterable[str], seed: int = 0,
                       dropout: float = 0.1, **shape) -> dict[str, int]:
    """Write a from-scratch ``kind`` ("mamba" | "bert") backbone + word tokenizer of ``texts`` to ``folder``;
    returns its parameter counts. ``shape`` overrides fields of :data:`TINY_SHAPES` (e.g. ``d_model=32``)."""
    from rerankers.data.word_tokenizer import build_word_tokenizer

    if kind not in TINY_SHAPES:
        raise ValueError(f"save_tiny_backbone: kind must be one of {', '.join(TINY_SHAPES)}, got {kind!r}")
    folder = Path(folder)
    shape = {**TINY_SHAPES[kind], **shape}
    tok = build_word_tokenizer(texts, kind)
    torch.manual_seed(seed)
    if kind == "mamba":
        from rerankers.models.mamba import MambaBackbone
        from rerankers.models.mamba_config import MambaConfig

        model = MambaBackbone(MambaConfig(vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                                          pad_token_id=tok.pad_token_id, **shape))
        model.save_pretrained(folder)
    else:
        from transformers import BertConfig, BertModel

        config = BertConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, hidden_dropout_prob=dropout,
                            attention_probs_dropout_prob=dropout, **shape)
        model = BertModel(config, add_pooling_layer=False)
        model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    counts = count_parameters(model)
    logger.info("tiny %s backbone in %s: %d parameters (%d outside the embeddings), vocabulary %d", kind, folder,
                counts["total"], counts["non_embedding"], len(tok))
    return counts

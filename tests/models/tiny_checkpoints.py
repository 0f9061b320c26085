"""Tiny random checkpoints and word-level tokenizers for model tests (built locally, never downloaded).

Imported by tests/models/* (pytest puts their folder on sys.path) and, elsewhere, through the
``tiny_checkpoints`` fixture of tests/conftest.py.
"""
from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("what is a cat dog dogs bark the an animal that purrs loudly at night and day query document "
         "relevant true false of in on for to how many people live berlin city capital germany water "
         "boils degrees celsius sea level fish swim river sun hot cold").split()

def word_tokenizer(kind: str):
    """A lowercasing whitespace/punctuation word-level fast tokenizer over :data:`WORDS` with ``kind``'s
    special tokens (rerankers.data.word_tokenizer, the library's builder)."""
    from rerankers.data.word_tokenizer import word_level_tokenizer
    return word_level_tokenizer([*WORDS, ":", ".", "?", ",", "\n", "query", "document", "relevant"], kind)


def bert_config(kind: str, vocab_size: int, **kw):
    from transformers import BertConfig, ElectraConfig, RobertaConfig
    common = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=96, initializer_range=0.3,
                  hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    common.update(kw)
    if kind == "bert":
        return BertConfig(**common)
    if kind == "electra":
        return ElectraConfig(embedding_size=32, **common)
    common["max_position_embeddings"] = 96 + 2
    return RobertaConfig(pad_token_id=0, bos_token_id=1, eos_token_id=2, type_vocab_size=1, **common)


def save_tiny_bert(directory: Path, kind: str = "bert", classification: bool = True, seed: int = 0) -> Path:
    """A tiny BERT/ELECTRA/RoBERTa (``*ForSequenceClassification`` with one logit, or the base model)."""
    from transformers import AutoModel, AutoModelForSequenceClassification
    torch.manual_seed(seed)
    tok = word_tokenizer("roberta" if kind == "roberta" else "bert")
    cfg = bert_config(kind, len(tok), num_labels=1)
    model = (AutoModelForSequenceClassification if classification else AutoModel).from_config(cfg)
    model.save_pretrained(str(directory))
    tok.save_pretrained(str(directory))
    return Path(directory)


def save_tiny_t5(directory: Path, seed: int = 0) -> Path:
    """A tiny T5ForConditionalGeneration (tied embeddings) + a word tokenizer with "true"/"false"."""
    from transformers import T5Config, T5ForConditionalGeneration
    torch.manual_seed(seed)
    tok = word_tokenizer("t5")
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=1,
                   num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id,
                   dropout_rate=0.1, initializer_factor=3.0)
    T5ForConditionalGeneration(cfg).save_pretrained(str(directory))
    tok.save_pretrained(str(directory))
    return Path(directory)


def save_tiny_mamba(directory: Path, seed: int = 0) -> Path:
    """A tiny Mamba-1 backbone (transformers checkpoint format) + a word tokenizer with an EOS."""
    from rerankers.models.mamba import MambaBackbone
    from rerankers.models.mamba_config import MambaConfig
    torch.manual_seed(seed)
    tok = word_tokenizer("mamba")
    MambaBackbone(MambaConfig(d_model=16, n_layer=2, vocab_size=len(tok), d_state=4, expand=2,
                              pad_vocab_size_multiple=8)).save_pretrained(directory)
    tok.save_pretrained(str(directory))
    return Path(directory)


BUILDERS = {
    "bert": lambda d: save_tiny_bert(d, "bert"),
    "electra": lambda d: save_tiny_bert(d, "electra"),
    "roberta": lambda d: save_tiny_bert(d, "roberta"),
    "t5": save_tiny_t5,
    "mamba": save_tiny_mamba,
}

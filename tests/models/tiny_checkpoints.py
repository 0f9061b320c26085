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


def save_tiny_bert(directory: Path, kind: str = "bert", classification: bool = True, seed: int = 0,
                   num_labels: int = 1) -> Path:
    """A tiny BERT/ELECTRA/RoBERTa (``*ForSequenceClassification`` with ``num_labels`` logits, or the base model)."""
    from transformers import AutoModel, AutoModelForSequenceClassification
    torch.manual_seed(seed)
    tok = word_tokenizer("roberta" if kind == "roberta" else "bert")
    cfg = bert_config(kind, len(tok), num_labels=num_labels)
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


def save_tiny_mamba2(directory: Path, seed: int = 0, fmt: str = "hf") -> Path:
    """A tiny Mamba-2 backbone (4 heads of 8, 2 groups, chunks of 4 tokens; ``fmt``: "hf" or "mamba_ssm")
    + a word tokenizer with an EOS."""
    from rerankers.models.mamba2 import Mamba2Backbone, Mamba2Config
    torch.manual_seed(seed)
    tok = word_tokenizer("mamba")
    Mamba2Backbone(Mamba2Config(d_model=16, n_layer=2, vocab_size=len(tok), d_state=4, expand=2, headdim=8,
                                ngroups=2, chunk_size=4)).save_pretrained(directory, format=fmt)
    tok.save_pretrained(str(directory))
    return Path(directory)


DECODER_TYPES = ("gpt_neox", "opt", "qwen2", "llama")


def decoder_config(model_type: str, tok):
    """A tiny decoder config of ``model_type`` with each family's quirks: GPT-NeoX partial rotary and parallel
    residual, OPT's learned positions with projected embeddings and post-norm (as opt-350m), Qwen2's grouped
    and Llama's multi-query attention. No padding id: the word tokenizer pads with its EOS, whose embedding
    row ``padding_idx`` would freeze."""
    from transformers import GPTNeoXConfig, LlamaConfig, OPTConfig, Qwen2Config
    ids = dict(vocab_size=len(tok), bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=96, **ids)
    if model_type == "gpt_neox":
        return GPTNeoXConfig(intermediate_size=48, rotary_pct=0.5, hidden_dropout=0.1, attention_dropout=0.1,
                             initializer_range=0.2, **common)
    if model_type == "opt":
        return OPTConfig(ffn_dim=48, word_embed_proj_dim=16, do_layer_norm_before=False, dropout=0.1,
                         attention_dropout=0.1, init_std=0.2, **common)
    if model_type == "qwen2":
        return Qwen2Config(intermediate_size=48, num_key_value_heads=2, tie_word_embeddings=True, attention_dropout=0.1,
                           initializer_range=0.2, **common)
    return LlamaConfig(intermediate_size=48, num_key_value_heads=1, attention_dropout=0.1, initializer_range=0.2,
                       **common)


def save_tiny_decoder(directory: Path, model_type: str = "gpt_neox", seed: int = 0) -> Path:
    """A tiny decoder + a word tokenizer with an EOS: a ``*ForCausalLM`` checkpoint as the hub has them, except
    Llama, saved as a base model (``LlamaModel``) with a tokenizer without a padding token."""
    from transformers import AutoModel, AutoModelForCausalLM
    torch.manual_seed(seed)
    tok = word_tokenizer("mamba")
    cfg = decoder_config(model_type, tok)
    (AutoModel if model_type == "llama" else AutoModelForCausalLM).from_config(cfg).save_pretrained(str(directory))
    if model_type == "llama":
        tok.pad_token = None
    tok.save_pretrained(str(directory))
    return Path(directory)


def save_tiny_lstm(directory: Path, seed: int = 0) -> Path:
    """A tiny 2-layer BiLSTM (rerankers-lstm folder) + a BERT-style word tokenizer."""
    from rerankers.models.lstm import LSTMBackbone, LSTMConfig
    torch.manual_seed(seed)
    tok = word_tokenizer("bert")
    LSTMBackbone(LSTMConfig(vocab_size=len(tok), embedding_size=16, hidden_size=12, num_layers=2,
                            pad_token_id=tok.pad_token_id)).save_pretrained(directory)
    tok.save_pretrained(str(directory))
    return Path(directory)


TOY_PAIRS = (("what is a cat", "a cat is an animal that purrs loudly"),
             ("dogs bark", "dogs bark at night"),
             ("how many people live in berlin", "berlin is the capital city of germany"),
             ("water boils at how many degrees", "water boils at degrees celsius at sea level"),
             ("fish swim", "fish swim in the river"),
             ("is the sun hot", "the sun is hot in the day"))


def write_toy_training(path: Path) -> Path:
    """A training JSONL over :data:`WORDS`: each query of :data:`TOY_PAIRS`, its document positive, the others
    negative (what a tiny model learns in a few dozen steps)."""
    import json
    lines = [json.dumps({"query": q, "positives": [d], "negatives": [o for _, o in TOY_PAIRS if o != d]})
             for q, d in TOY_PAIRS]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


BUILDERS = {
    "bert": lambda d: save_tiny_bert(d, "bert"),
    "electra": lambda d: save_tiny_bert(d, "electra"),
    "roberta": lambda d: save_tiny_bert(d, "roberta"),
    "t5": save_tiny_t5,
    "mamba": save_tiny_mamba,
    "mamba2": save_tiny_mamba2,
    **{t: (lambda d, t=t: save_tiny_decoder(d, t)) for t in DECODER_TYPES},
    "lstm": save_tiny_lstm,
}

"""A word-level tokenizer built from a corpus, for models trained from scratch offline.

No pretrained tokenizer can be downloaded here, and a model trained from random weights does not
need one: a lowercasing word-level vocabulary of the training texts (words split at whitespace and
punctuation, the most frequent first) serves a tiny Mamba and a tiny BERT alike, so the two compare
on the same tokens. The result is a transformers fast tokenizer with the special tokens of the
template it serves (``bert``: [CLS]/[SEP]/[PAD]/[UNK]/[MASK]; ``mamba``: an EOS that doubles as
padding), saved and loaded like any other with ``save_pretrained`` / ``AutoTokenizer``.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

SPECIALS = {
    "bert": {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
             "mask_token": "[MASK]"},
    "roberta": {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
                "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"},
    "t5": {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"},
    "mamba": {"eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<|endoftext|>"},
}
# the words of the templates (``Document: d\n\nQuery: q``), always in the vocabulary
TEMPLATE_WORDS = ("query", "document", "relevant", ":", "\n", ".", "?", ",")
_WORD = re.compile(r"\w+|[^\w\s]")


def count_words(texts: Iterable[str]) -> Counter:
    """Lowercased words and punctuation marks of ``texts``, counted."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(_WORD.findall(text.lower()))
    return counts


def word_level_tokenizer(words: Iterable[str], kind: str = "bert"):
    """A lowercasing word-level fast tokenizer: ``kind``'s special tokens first, then ``words`` in order.

    kind: "bert" ([CLS] q [SEP] d [SEP], token types 0/1, as BERT's own tokenizer pairs), "roberta"
    (<s> q </s></s> d </s>), "t5" or "mamba" (an EOS that doubles as padding).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if kind not in SPECIALS:
        raise ValueError(f"word_level_tokenizer: kind must be one of {', '.join(SPECIALS)}, got {kind!r}")
    specials = SPECIALS[kind]
    vocab: dict[str, int] = {}
    for token in (*specials.values(), *words):
        vocab.setdefault(token, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials["unk_token"]))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    if kind == "bert":
        cls_, sep = specials["cls_token"], specials["sep_token"]
        tk.post_processor = processors.TemplateProcessing(
            single=f"{cls_} $A {sep}", pair=f"{cls_} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls_, vocab[cls_]), (sep, vocab[sep])])
    elif kind == "roberta":
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
    names = ["input_ids", "token_type_ids", "attention_mask"] if kind == "bert" else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(tokenizer_object=tk, model_input_names=names, **specials)


def build_word_tokenizer(texts: Iterable[str], kind: str = "bert", max_words: int | None = None,
                         min_count: int = 1):
    """A fast word-level tokenizer over the words of ``texts`` (most frequent first, ties by word).

    Args:
        texts:     the training texts (queries and documents)
        kind:      "bert" ([CLS] q [SEP] d [SEP] pairs) or "mamba" (an EOS token); see :func:`word_level_tokenizer`
        max_words: keep at most this many words (the rest map to the unknown token)
        min_count: drop words seen fewer times
    """
    counts = count_words(texts)
    words = [w for w, c in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])) if c >= min_count]
    return word_level_tokenizer([*TEMPLATE_WORDS, *(words[:max_words] if max_words is not None else words)], kind)

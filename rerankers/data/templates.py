"""Per-backbone input templates: (query, document) texts -> one token-id sequence per pair.

Truncation rule, the same for every template: the query is kept whole up to ``max_query_tokens``
(its tail is cut beyond that), then the document is cut from its end so that the whole sequence,
special tokens and template words included, fits ``max_length``. Documents that lose tokens are
counted; :func:`encode_pairs` reports the count in one warning per call.

Templates (by ``name``):

- ``bert``:    ``[CLS] q [SEP] d [SEP]`` with token types 0 for ``[CLS] q [SEP]``, 1 for ``d [SEP]``
               (``pair_separators=2`` gives RoBERTa's ``<s> q </s></s> d </s>``, all types 0).
- ``mamba``:   RankMamba ``Document: {doc}\\n\\nQuery: {query}<eos>``: document first, query last, EOS
               last (a causal model pools the last token, which has then read both); [SEP] ends the
               sequence where the tokenizer has no EOS (a BERT vocabulary shared with a BERT model).
- ``t5``:      monoT5 ``Query: {q} Document: {d} Relevant:</s>`` (the decoder then emits true/false).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from rerankers.errors import EmptyInputError, TemplateError

logger = logging.getLogger(__name__)

TEMPLATE_NAMES = ("bert", "mamba", "t5")




@dataclass
class TemplateConfig:
    """How pairs become token ids. Saved in a cross-encoder's config.

    name:              one of TEMPLATE_NAMES
    max_length:        longest sequence in tokens, specials included
    max_query_tokens:  the query's own tokens are cut beyond this
    pair_separators:   ``bert`` only: 1 (BERT, ELECTRA) or 2 (RoBERTa)
    use_token_types:   ``bert`` only: emit segment ids 0/1 (False for RoBERTa: all 0)
    """

    name: str = "bert"
    max_length: int = 512
    max_query_tokens: int = 64
    pair_separators: int = 1
    use_token_types: bool = True

    def __post_init__(self) -> None:
        if self.name not in TEMPLATE_NAMES:
            raise TemplateError(f"unknown template {self.name!r}; known: {', '.join(TEMPLATE_NAMES)}")
        if self.max_query_tokens < 1 or self.max_length < self.max_query_tokens + 8:
            raise TemplateError(f"template: max_length={self.max_length} must exceed max_query_tokens="
                             f"{self.max_query_tokens} by at least 8 tokens (specials, template words, "
                             "and some document)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TemplateConfig":
        """Strict: an unknown key (a typo such as ``max_lenght``) is a TemplateError, never ignored."""
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise TemplateError(f"unknown template key(s) {', '.join(map(repr, unknown))}; "
                                f"known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**d)


@dataclass
class EncodedPairs:
    """Token ids of N pairs, in input order.

    input_ids:       N lists of ids (each non-empty)
    token_type_ids:  N lists of segment ids, or None where the template has none
    truncated:       indices (into the N pairs) whose document lost tokens
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    truncated: list[int] = field(default_factory=list)

    @property
    def lengths(self) -> list[int]:
        return [len(s) for s in self.input_ids]


def _special(tokenizer, attr: str, fallback_attr: str | None = None) -> int:
    tid = getattr(tokenizer, attr, None)
    if tid is None and fallback_attr is not None:
        tid = getattr(tokenizer, fallback_attr, None)
    if tid is None:
        raise TemplateError(f"tokenizer {type(tokenizer).__name__} has no {attr}"
                         + (f" or {fallback_attr}" if fallback_attr else "") + ": it does not fit this template")
    return int(tid)


def _tokenize(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(x) for x in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def check_not_empty(queries: Sequence[str], docs: Sequence[str],
                    ids: Sequence[Any] | None = None) -> None:
    """Raise EmptyInputError naming the first empty query or document (by id where given, else index)."""
    if len(queries) != len(docs):
        raise TemplateError(f"{len(queries)} queries but {len(docs)} documents: pairs must align")
    for i, (q, d) in enumerate(zip(queries, docs)):
        who = f"pair {i}" + (f" (id {ids[i]!r})" if ids is not None else "")
        if not isinstance(q, str) or not q.strip():
            raise EmptyInputError(f"{who}: the query is empty")
        if not isinstance(d, str) or not d.strip():
            raise EmptyInputError(f"{who}: the document is empty")


def encode_pairs(tokenizer, queries: Sequence[str], docs: Sequence[str], config: TemplateConfig,
                 ids: Sequence[Any] | None = None, warn: bool = True) -> EncodedPairs:
    """Encode N (query, doc) pairs with ``config``'s template; see the module doc for truncation.

    ``ids`` (optional, N) name the pairs in errors (e.g. doc ids). With ``warn``, one warning
    counts the documents that were truncated.
    """
    check_not_empty(queries, docs, ids)
    if config.name == "bert":
        enc = _encode_bert(tokenizer, queries, docs, config)
    elif config.name == "mamba":
        enc = _encode_mamba(tokenizer, queries, docs, config)
    else:
        enc = _encode_t5(tokenizer, queries, docs, config)
    if warn and enc.truncated:
        logger.warning("%d of %d documents were truncated to fit max_length=%d tokens (template %s)",
                       len(enc.truncated), len(docs), config.max_length, config.name)
    return enc


def _fit(q: list[int], d: list[int], fixed: int, config: TemplateConfig) -> tuple[list[int], list[int], bool]:
    """Cut q to max_query_tokens, then d so that fixed + len(q) + len(d) <= max_length."""
    q = q[: config.max_query_tokens]
    room = config.max_length - fixed - len(q)
    if room < 1:
        raise TemplateError(f"template {config.name}: no room for the document (max_length={config.max_length}, "
                         f"{fixed} template tokens, {len(q)} query tokens)")
    return q, d[:room], len(d) > room


def _encode_bert(tokenizer, queries, docs, config: TemplateConfig) -> EncodedPairs:
    cls_id = _special(tokenizer, "cls_token_id", "bos_token_id")
    sep_id = _special(tokenizer, "sep_token_id", "eos_token_id")
    nsep = config.pair_separators
    fixed = 2 + nsep
    out_ids, out_tt, truncated = [], [] if config.use_token_types else None, []
    for i, (q, d) in enumerate(zip(_tokenize(tokenizer, queries), _tokenize(tokenizer, docs))):
        q, d, cut = _fit(q, d, fixed, config)
        if cut:
            truncated.append(i)
        ids = [cls_id, *q, *([sep_id] * nsep), *d, sep_id]
        out_ids.append(ids)
        if out_tt is not None:
            first = 1 + len(q) + 1  # [CLS] q [SEP]
            out_tt.append([0] * first + [1] * (len(ids) - first))
    return EncodedPairs(out_ids, out_tt, truncated)


def _encode_mamba(tokenizer, queries, docs, config: TemplateConfig) -> EncodedPairs:
    eos_id = _special(tokenizer, "eos_token_id", "sep_token_id")  # a BERT vocabulary ends with [SEP]
    prefix = _tokenize(tokenizer, ["Document:"])[0]
    middle = _tokenize(tokenizer, ["\n\nQuery:"])[0]
    fixed = len(prefix) + len(middle) + 1
    out_ids, truncated = [], []
    dtoks = _tokenize(tokenizer, [" " + d for d in docs])
    qtoks = _tokenize(tokenizer, [" " + q for q in queries])
    for i, (q, d) in enumerate(zip(qtoks, dtoks)):
        q, d, cut = _fit(q, d, fixed, config)
        if cut:
            truncated.append(i)
        out_ids.append([*prefix, *d, *middle, *q, eos_id])
    return EncodedPairs(out_ids, None, truncated)


def _encode_t5(tokenizer, queries, docs, config: TemplateConfig) -> EncodedPairs:
    eos_id = _special(tokenizer, "eos_token_id")
    q_word = _tokenize(tokenizer, ["Query:"])[0]
    d_word = _tokenize(tokenizer, ["Document:"])[0]
    r_word = _tokenize(tokenizer, ["Relevant:"])[0]
    fixed = len(q_word) + len(d_word) + len(r_word) + 1
    out_ids, truncated = [], []
    for i, (q, d) in enumerate(zip(_tokenize(tokenizer, queries), _tokenize(tokenizer, docs))):
        q, d, cut = _fit(q, d, fixed, config)
        if cut:
            truncated.append(i)
        out_ids.append([*q_word, *q, *d_word, *d, *r_word, eos_id])
    return EncodedPairs(out_ids, None, truncated)

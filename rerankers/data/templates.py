"""Per-backbone input templates: (query, document) texts -> one token-id sequence per pair.

Truncation rule, the same for every template: the query is kept whole up to ``max_query_tokens``
(default 64; its tail is cut beyond that), then the document is cut from its end so that the whole
sequence, special tokens and template words included, fits ``max_length`` (default 512, or fewer
where the model has fewer positions). For the ``bert`` template and a query within
``max_query_tokens`` this is exactly what transformers builds with
``tokenizer(query, doc, truncation="only_second", max_length=max_length)``: the same ids and the
same token types (none where the tokenizer emits no ``token_type_ids``; the model then sees zeros,
as it would from transformers). Queries and documents that lose tokens are counted;
:func:`encode_pairs` (and :meth:`Reranker.score_pairs` over a whole call) reports the counts and
both limits in one warning (:func:`log_truncation`).

Templates (by ``name``):

- ``bert``:    ``[CLS] q [SEP] d [SEP]`` with token types 0 for ``[CLS] q [SEP]``, 1 for ``d [SEP]``
               where the tokenizer emits ``token_type_ids`` (``pair_separators=2`` gives RoBERTa's
               ``<s> q </s></s> d </s>``, without token types).
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
    use_token_types:   ``bert`` only: emit segment ids 0/1 where the tokenizer emits ``token_type_ids``
                       (as transformers' ``tokenizer(q, d)``); False: none (RoBERTa)
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

    input_ids:          N lists of ids (each non-empty)
    token_type_ids:     N lists of segment ids, or None where the template (or tokenizer) has none
    truncated:          indices (into the N pairs) whose document lost tokens
    queries_truncated:  indices whose query was cut to ``max_query_tokens``
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    truncated: list[int] = field(default_factory=list)
    queries_truncated: list[int] = field(default_factory=list)

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
    """Token ids of each text, no special tokens, nothing cut (``verbose=False``: the cut is ours, so
    transformers' "longer than the specified maximum sequence length" warning would be wrong here)."""
    if not texts:
        return []
    return [list(x) for x in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]]


def emits_token_types(tokenizer) -> bool:
    """True where ``tokenizer(q, d)`` returns ``token_type_ids`` (its ``model_input_names`` name them)."""
    return "token_type_ids" in (getattr(tokenizer, "model_input_names", None) or ("token_type_ids",))


def log_truncation(docs_cut: int, queries_cut: int, pairs: int, config: TemplateConfig) -> None:
    """One warning counting the documents and queries that lost tokens, with both limits (none if nothing was cut)."""
    if not docs_cut and not queries_cut:
        return
    logger.warning("%d of %d documents were truncated to fit max_length=%d tokens and %d of %d queries cut to "
                   "max_query_tokens=%d (template %s)", docs_cut, pairs, config.max_length, queries_cut, pairs,
                   config.max_query_tokens, config.name)


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
    counts the documents and queries that were truncated (:func:`log_truncation`).
    """
    check_not_empty(queries, docs, ids)
    if config.name == "bert":
        enc = _encode_bert(tokenizer, queries, docs, config)
    elif config.name == "mamba":
        enc = _encode_mamba(tokenizer, queries, docs, config)
    else:
        enc = _encode_t5(tokenizer, queries, docs, config)
    if warn:
        log_truncation(len(enc.truncated), len(enc.queries_truncated), len(docs), config)
    return enc


class _Fitter:
    """Cuts each pair to the template's limits and records which pairs lost tokens."""

    def __init__(self, config: TemplateConfig, fixed: int):
        self.config, self.fixed = config, fixed
        self.truncated: list[int] = []
        self.queries_truncated: list[int] = []

    def __call__(self, i: int, q: list[int], d: list[int]) -> tuple[list[int], list[int]]:
        """Pair ``i``: q cut to max_query_tokens, then d so that fixed + len(q) + len(d) <= max_length."""
        config = self.config
        if len(q) > config.max_query_tokens:
            self.queries_truncated.append(i)
            q = q[: config.max_query_tokens]
        room = config.max_length - self.fixed - len(q)
        if room < 1:
            raise TemplateError(f"template {config.name}: no room for the document (max_length="
                                f"{config.max_length}, {self.fixed} template tokens, {len(q)} query tokens)")
        if len(d) > room:
            self.truncated.append(i)
        return q, d[:room]

    def result(self, input_ids: list[list[int]], token_type_ids: list[list[int]] | None = None) -> EncodedPairs:
        return EncodedPairs(input_ids, token_type_ids, self.truncated, self.queries_truncated)


def _encode_bert(tokenizer, queries, docs, config: TemplateConfig) -> EncodedPairs:
    cls_id = _special(tokenizer, "cls_token_id", "bos_token_id")
    sep_id = _special(tokenizer, "sep_token_id", "eos_token_id")
    nsep = config.pair_separators
    fit = _Fitter(config, 2 + nsep)
    out_ids, out_tt = [], [] if config.use_token_types and emits_token_types(tokenizer) else None
    for i, (q, d) in enumerate(zip(_tokenize(tokenizer, queries), _tokenize(tokenizer, docs))):
        q, d = fit(i, q, d)
        ids = [cls_id, *q, *([sep_id] * nsep), *d, sep_id]
        out_ids.append(ids)
        if out_tt is not None:
            first = 1 + len(q) + 1  # [CLS] q [SEP]
            out_tt.append([0] * first + [1] * (len(ids) - first))
    return fit.result(out_ids, out_tt)


def _encode_mamba(tokenizer, queries, docs, config: TemplateConfig) -> EncodedPairs:
    eos_id = _special(tokenizer, "eos_token_id", "sep_token_id")  # a BERT vocabulary ends with [SEP]
    prefix = _tokenize(tokenizer, ["Document:"])[0]
    middle = _tokenize(tokenizer, ["\n\nQuery:"])[0]
    fit = _Fitter(config, len(prefix) + len(middle) + 1)
    out_ids = []
    dtoks = _tokenize(tokenizer, [" " + d for d in docs])
    qtoks = _tokenize(tokenizer, [" " + q for q in queries])
    for i, (q, d) in enumerate(zip(qtoks, dtoks)):
        q, d = fit(i, q, d)
        out_ids.append([*prefix, *d, *middle, *q, eos_id])
    return fit.result(out_ids)


def _encode_t5(tokenizer, queries, docs, config: TemplateConfig) -> EncodedPairs:
    eos_id = _special(tokenizer, "eos_token_id")
    q_word = _tokenize(tokenizer, ["Query:"])[0]
    d_word = _tokenize(tokenizer, ["Document:"])[0]
    r_word = _tokenize(tokenizer, ["Relevant:"])[0]
    fit = _Fitter(config, len(q_word) + len(d_word) + len(r_word) + 1)
    out_ids = []
    for i, (q, d) in enumerate(zip(_tokenize(tokenizer, queries), _tokenize(tokenizer, docs))):
        q, d = fit(i, q, d)
        out_ids.append([*q_word, *q, *d_word, *d, *r_word, eos_id])
    return fit.result(out_ids)

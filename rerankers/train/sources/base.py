"""What every kind of training source shares: kinds, text ids, the loader context and results, id groups.

A loader (one per kind, :data:`KINDS`) is called as ``loader(source, target, qrels_arg, ctx)``: the
``--train`` value, its file path or dataset id, its qrels argument (or None) and the :class:`_Context` of
the call; it returns a :class:`_Loaded` (the queries before dropping, and what was missing). Pair kinds
(text and id triples, training JSONL, docpairs) gather ids per query in a :class:`_Groups` and turn it
into queries with :func:`_pair_queries`.
"""
from __future__ import annotations

import hashlib
import logging
from collections import ChainMap
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from rerankers.data.datasets import load_dataset_docs, resolve_docs, resolve_qrels
from rerankers.data.texts import Texts
from rerankers.data.trec import Qrels, Run
from rerankers.errors import UsageError
from rerankers.train.examples import Candidate, TrainQuery
from rerankers.utils.progress import progress_bar

logger = logging.getLogger("rerankers.train.sources")  # one logger for the whole package, as before the split

KINDS = ("candidates", "run", "jsonl", "text-triples", "id-triples", "irds-judged", "irds-docpairs")
TAKES_QRELS = frozenset({"candidates", "run", "irds-judged"})
_EXAMPLES = 5  # qids / docids named in a warning


def text_id(text: str, prefix: str) -> str:
    """A stable id for a text (``prefix`` + the first 16 hex digits of its SHA-1): ids of text sources."""
    return prefix + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


# ---- what a source gives before dropping ---------------------------------------------------------
@dataclass
class _Loaded:
    queries: list[TrainQuery]
    no_text: list[str] = field(default_factory=list)  # qids without a query text
    missing_docs: list[str] = field(default_factory=list)  # docids without a text anywhere
    where: str = ""  # where texts were looked up, for the warning


@dataclass
class _Context:
    """The arguments every loader may need."""

    rel_level: int | None
    depth: int | None
    corpus: str | None
    queries: str | None
    negatives_run: str | None
    pool: Mapping[str, str]  # texts of every candidates source of the call
    candidates: dict[str, tuple[Texts, Run, Texts]]  # read candidates files, by path
    qrels_cache: dict[str, tuple[Qrels, str]] = field(default_factory=dict)

    def qrels(self, arg: str) -> Qrels:
        if arg not in self.qrels_cache:
            self.qrels_cache[arg] = resolve_qrels(arg)
        return self.qrels_cache[arg][0]

    def texts_with_corpus(self, first: Mapping[str, str], needed: set[str]) -> tuple[Mapping[str, str], str]:
        """``first``, then the other candidates' texts, then ``corpus`` for what is still missing."""
        chain: ChainMap = ChainMap(first, self.pool)
        where = "the candidates"
        lacking = {d for d in needed if d not in chain}
        if lacking and self.corpus:
            found, desc = resolve_docs(self.corpus, lacking)
            chain.maps.append(found)
            where += f" and {desc}"
        return chain, where


def _need(value: str | None, what: str, source: str, kind: str, flag: str) -> str:
    if not value:
        raise UsageError(f"training source {source} ({kind}) needs {what}: {flag}")
    return value


def _store_lookup(dataset_id: str, docids: Iterable[str], chunk: int = 100_000) -> dict[str, str]:
    """Texts of ``docids`` from a dataset's document store (absent ones left out), in chunks."""
    store = load_dataset_docs(dataset_id)
    ids = sorted(docids)
    texts: dict[str, str] = {}
    for start in progress_bar(range(0, len(ids), chunk), desc="document texts", unit="chunk",
                              **({"disable": True} if len(ids) <= chunk else {})):
        texts.update(store.lookup(ids[start:start + chunk]))
    return texts


class _Groups:
    """Positive and negative ids per query, in first-appearance order, each id once per query."""

    def __init__(self) -> None:
        self.pos: dict[str, dict[str, None]] = {}
        self.neg: dict[str, dict[str, None]] = {}

    def add(self, qid: str, positive: str | None, negative: str | None) -> None:
        pos = self.pos.setdefault(qid, {})
        neg = self.neg.setdefault(qid, {})
        if positive is not None:
            pos[positive] = None
        if negative is not None:
            neg[negative] = None

    def docids(self) -> set[str]:
        return {d for group in (self.pos, self.neg) for docs in group.values() for d in docs}


def _pair_queries(source: str, groups: _Groups, query_texts: Mapping[str, str], texts: Mapping[str, str],
                  where: str, teacher: Mapping[tuple[str, str], float] | None = None) -> _Loaded:
    """TrainQuery per group: labels 1.0 / 0.0; a document positive for the query is never its negative."""
    out = _Loaded([], where=where)
    missing: dict[str, None] = {}
    scores = teacher or {}
    for qid in groups.pos:
        if qid not in query_texts:
            out.no_text.append(qid)
            continue
        q = TrainQuery(qid=qid, text=query_texts[qid], source=source)
        positives = groups.pos[qid]
        for ids, bucket, label in ((positives, q.positives, 1.0),
                                   ([d for d in groups.neg[qid] if d not in positives], q.negatives, 0.0)):
            for d in ids:
                if d not in texts:
                    missing[d] = None
                else:
                    bucket.append(Candidate(docid=d, text=texts[d], label=label, teacher=scores.get((qid, d))))
        out.queries.append(q)
    out.missing_docs = list(missing)
    return out

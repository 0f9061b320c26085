"""Training sources: files and ir_datasets ids turned into :class:`~rerankers.train.examples.TrainQuery` lists.

:func:`load_training_queries` reads every ``--train`` source, in order, and returns the queries that
have at least one positive and one negative. Source kinds, detected from the file (its name and
first line) or the id; ``KIND:PATH`` (e.g. ``run:first_stage.tsv``) forces a kind:

=================  ===============================================================  ======================
kind               what                                                             also needs
=================  ===============================================================  ======================
``candidates``     rank_llm candidates, a JSON list (``.json``) or JSONL            qrels
                   (``.jsonl``) of ``{"query", "hits": [{"qid", "docid", "rank",
                   "score", "content"}]}``: queries, first-stage ranking and texts
``run``            a first-stage TREC run ``qid Q0 docid rank score tag``           qrels, corpus, queries
``jsonl``          one object a line, ``{"query", "positives", "negatives"}``       --
                   (see below)
``text-triples``   ``query<TAB>positive<TAB>negative`` (texts)                      --
``id-triples``     MS MARCO ``qid<TAB>pid+<TAB>pid-``                                corpus, queries
``irds-judged``    an ir_datasets id with qrels (``msmarco-passage/train/judged``):  ``negatives_run``
                   its qrels, queries and document store
``irds-docpairs``  an ir_datasets id with docpairs                                  --
                   (``msmarco-passage/train/triples-small``, any id whose last
                   part starts with ``triples``): its pairs, queries and documents
=================  ===============================================================  ======================

Ranked kinds (candidates, run, irds-judged), per query:

- positives: documents judged ``>= rel_level``, those the ranking holds first (in rank order), then
  the other judged-relevant ones (qrels order) whose text is known anywhere: this source, the other
  candidates sources of the call, or ``corpus``. A document with no text anywhere is skipped and
  counted. ``rel_level=None`` takes :func:`rerankers.eval.metrics.default_rel_level` of the qrels
  (TREC DL's grades 0-3: a positive is grade >= 2, as the track counts it).
- negatives: the ranking (score descending, trec_eval's tie order) cut at ``negatives_depth``
  ranks, judged-relevant documents left out; unjudged and judged-below-level documents stay.
- labels: the qrels grade (negative grades count as 0), 0.0 for an unjudged document.

Text kinds have no ids: a query's id is ``text_id(query, "q")``, a document's ``text_id(text, "d")``
(stable SHA-1 prefixes), and lines of the same query (same text, or same ``"qid"``) merge into one
query. Labels: 1.0 for a positive, 0.0 for a negative. ``negatives_depth`` applies to the ranked
kinds only. ID triples and docpairs group by qid the same way and keep their ids.

Training JSONL, one object a line::

    {"qid": "q1", "query": "text", "positives": ["text", ...], "negatives": ["text", ...],
     "scores": {"positives": [9.1, ...], "negatives": [2.3, null, ...]}}

``qid`` (string or integer) and ``scores`` are optional, and so is one of the two lists. ``scores``
holds teacher scores for distillation (Margin-MSE): lists aligned with ``positives`` and
``negatives`` (same lengths; ``null`` for a text the teacher did not score; a side may be left out).

``teacher`` (a TREC run of teacher scores) sets :attr:`Candidate.teacher` on every candidate it
scores (by qid and docid), after everything else; its scores win over JSONL ``scores``.

Several sources concatenate in order; a query id met again in a later source merges into the first
(positives and negatives added where new, a document positive in one source never a negative), so
e.g. DL20's BM25 and SPLADE candidates give one query with both pools. The same id with another
query text is a UsageError.

Reporting: a query with no positive, no negative or no query text is dropped; each source logs at
most one warning (the counts, a few qids, and documents whose text is missing) and one info line
(queries, positives, negatives). Nothing left: TrainingDataError naming the sources. A malformed
line: DataFormatError naming the file and the line.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import ChainMap
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from rerankers.data.datasets import (
    dataset_entities,
    is_file_argument,
    iter_dataset_docpairs,
    load_dataset_docs,
    load_dataset_qrels,
    load_dataset_queries,
    resolve_dataset_id,
    resolve_docs,
    resolve_qrels,
    resolve_queries,
)
from rerankers.data.lines import check_readable, iter_lines
from rerankers.data.texts import Texts, _iter_jsonl, read_candidates
from rerankers.data.trec import Qrels, Run, ranked, read_run
from rerankers.errors import DataFormatError, TrainingDataError, UsageError
from rerankers.eval.metrics import default_rel_level
from rerankers.train.examples import Candidate, TrainQuery
from rerankers.utils.progress import progress_bar

logger = logging.getLogger(__name__)

KINDS = ("candidates", "run", "jsonl", "text-triples", "id-triples", "irds-judged", "irds-docpairs")
TAKES_QRELS = frozenset({"candidates", "run", "irds-judged"})
_EXAMPLES = 5  # qids / docids named in a warning


def text_id(text: str, prefix: str) -> str:
    """A stable id for a text (``prefix`` + the first 16 hex digits of its SHA-1): ids of text sources."""
    return prefix + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


# ---- kind detection ------------------------------------------------------------------------------
def _split_kind(source: str) -> tuple[str | None, str]:
    """``KIND:TARGET`` -> ``(KIND, TARGET)``; anything else (an existing path first) -> ``(None, source)``."""
    head, sep, rest = source.partition(":")
    if sep and head in KINDS and not Path(source).exists():
        return head, rest
    return None, source


def _msmarco_run_like(path: Path, first: list[str]) -> bool:
    """Three columns ``qid docid rank`` whose first two lines rank 1 and 2 for one query: an MS MARCO run."""
    if first[2] != "1":
        return False
    lines = iter_lines(path)
    try:
        next(lines)
        second = next(lines, (0, ""))[1].split()
    finally:
        lines.close()
    return len(second) == 3 and second[0] == first[0] and second[2] == "2"


def _file_kind(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith(".json"):
        return "candidates"
    lines = iter_lines(path)
    try:
        lineno, line = next(lines)
    finally:
        lines.close()
    text = line.strip()
    if text.startswith("["):
        return "candidates"
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
        if isinstance(obj, dict) and "hits" in obj:
            return "candidates"
        if isinstance(obj, dict) and "query" in obj and ("positives" in obj or "negatives" in obj):
            return "jsonl"
        raise DataFormatError(path, lineno, "cannot tell the kind of training source: a JSON line with neither 'hits' "
                                            "(candidates) nor 'query' + 'positives'/'negatives' (training JSONL)")
    tabs, words = line.split("\t"), line.split()
    if len(tabs) == 3 and len(words) == 3:
        return "run" if _msmarco_run_like(path, words) else "id-triples"
    if len(tabs) == 3:
        return "text-triples"
    if len(words) == 6 or (len(words) > 6 and words[1] == "Q0"):
        return "run"
    if len(words) == 4:
        hint = "it looks like qrels ('qid iteration docid grade'): give them as --train-qrels"
    elif len(tabs) == 2:
        hint = "it looks like queries or a corpus ('id<TAB>text'): give them as --queries / --corpus"
    else:
        hint = f"{len(tabs)} tab-separated fields, {len(words)} words"
    raise DataFormatError(path, lineno, f"cannot tell the kind of training source ({hint}); expected candidates "
                                        "(JSON), a TREC run, training JSONL, text triples or id triples; "
                                        f"KIND:PATH forces one of {', '.join(KINDS)}")


def detect_kind(source: str) -> tuple[str, str]:
    """``source`` -> ``(kind, target)``: the kind (one of :data:`KINDS`) and the file path or dataset id.

    Raises DataFormatError for a missing file or one of no known kind, UnknownDatasetError for a
    name that is neither a file nor an ir_datasets id, UsageError for a dataset with neither qrels
    nor docpairs.
    """
    kind, target = _split_kind(str(source))
    if kind is not None:
        if kind.startswith("irds-"):
            target = resolve_dataset_id(target)
        return kind, target
    if is_file_argument(target):
        return _file_kind(check_readable(target)), target
    dataset_id = resolve_dataset_id(target)
    provides = dataset_entities(dataset_id)
    if "docpairs" in provides and (dataset_id.rsplit("/", 1)[-1].startswith("triples") or "qrels" not in provides):
        return "irds-docpairs", dataset_id
    if "qrels" in provides:
        return "irds-judged", dataset_id
    raise UsageError(f"dataset {dataset_id!r} has neither qrels nor docpairs: it cannot be a training source")


# ---- what a source gives before dropping ---------------------------------------------------------
@dataclass
class _Loaded:
    queries: list[TrainQuery]
    no_text: list[str] = field(default_factory=list)  # qids without a query text
    missing_docs: list[str] = field(default_factory=list)  # docids without a text anywhere
    where: str = ""  # where texts were looked up, for the warning


def _label(grade: int | None) -> float:
    return float(max(grade, 0)) if grade is not None else 0.0


def _ranked_docids(run: Run, qrels: Qrels, qid: str, level: int, depth: int | None) -> tuple[list[str], list[str]]:
    """Positive and negative docids of one query (see the module doc), texts not yet looked up."""
    judged = qrels.get(qid, {})
    ranking = [d for d, _ in ranked(run.get(qid, {}))]
    in_ranking = set(ranking)
    positives = [d for d in ranking if judged.get(d, level - 1) >= level]
    positives += [d for d, g in judged.items() if g >= level and d not in in_ranking]
    head = ranking if depth is None else ranking[:depth]
    negatives = [d for d in head if judged.get(d, level - 1) < level]
    return positives, negatives


def _needed(order: Iterable[str], run: Run, qrels: Qrels, level: int, depth: int | None) -> set[str]:
    needed: set[str] = set()
    for qid in order:
        pos, neg = _ranked_docids(run, qrels, qid, level, depth)
        needed.update(pos)
        needed.update(neg)
    return needed


def _ranked_queries(source: str, order: Iterable[str], query_texts: Mapping[str, str], run: Run, qrels: Qrels,
                    level: int, depth: int | None, texts: Mapping[str, str], where: str) -> _Loaded:
    out = _Loaded([], where=where)
    missing: dict[str, None] = {}
    for qid in order:
        if qid not in query_texts:
            out.no_text.append(qid)
            continue
        judged = qrels.get(qid, {})
        pos_ids, neg_ids = _ranked_docids(run, qrels, qid, level, depth)
        q = TrainQuery(qid=qid, text=query_texts[qid], source=source)
        for ids, bucket in ((pos_ids, q.positives), (neg_ids, q.negatives)):
            for d in ids:
                text = texts.get(d)
                if text is None:
                    missing[d] = None
                else:
                    bucket.append(Candidate(docid=d, text=text, label=_label(judged.get(d))))
        out.queries.append(q)
    out.missing_docs = list(missing)
    return out


def _level(rel_level: int | None, qrels: Qrels, source: str) -> int:
    level = default_rel_level(qrels) if rel_level is None else int(rel_level)
    logger.debug("training source %s: positives are judged >= %d", source, level)
    return level


# ---- the kinds -----------------------------------------------------------------------------------
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


def _load_candidates(source: str, path: str, qrels_arg: str | None, ctx: _Context) -> _Loaded:
    qrels = ctx.qrels(_need(qrels_arg, "qrels", source, "candidates", "--train-qrels FILE"))
    queries, run, docs = ctx.candidates[path]
    level = _level(ctx.rel_level, qrels, source)
    texts, where = ctx.texts_with_corpus(docs, _needed(queries, run, qrels, level, ctx.depth))
    return _ranked_queries(source, queries, queries, run, qrels, level, ctx.depth, texts, where)


def _load_run(source: str, path: str, qrels_arg: str | None, ctx: _Context) -> _Loaded:
    qrels = ctx.qrels(_need(qrels_arg, "qrels", source, "run", "--train-qrels FILE"))
    corpus = _need(ctx.corpus, "document texts", source, "run", "--corpus FILE")
    query_texts, _ = resolve_queries(_need(ctx.queries, "query texts", source, "run", "--queries FILE"))
    run = read_run(path)
    level = _level(ctx.rel_level, qrels, source)
    needed = _needed(run, run, qrels, level, ctx.depth)
    found, desc = resolve_docs(corpus, {d for d in needed if d not in ctx.pool})
    return _ranked_queries(source, run, query_texts, run, qrels, level, ctx.depth, ChainMap(found, ctx.pool), desc)


def _load_irds_judged(source: str, dataset_id: str, qrels_arg: str | None, ctx: _Context) -> _Loaded:
    negatives_run = _need(ctx.negatives_run, "a run to draw negatives from", source, "irds-judged",
                          "negatives_run=FILE (a first-stage TREC run of its queries)")
    qrels = ctx.qrels(qrels_arg) if qrels_arg else load_dataset_qrels(dataset_id)
    query_texts = load_dataset_queries(dataset_id)
    run = read_run(negatives_run)
    level = _level(ctx.rel_level, qrels, source)
    needed = _needed(qrels, run, qrels, level, ctx.depth)
    texts = _store_lookup(dataset_id, needed)
    return _ranked_queries(source, qrels, query_texts, run, qrels, level, ctx.depth, texts, dataset_id)


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


def _load_text_triples(source: str, path: str, qrels_arg: str | None, ctx: _Context) -> _Loaded:
    groups, queries, texts = _Groups(), {}, {}
    for lineno, line in iter_lines(path):
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataFormatError(path, lineno, f"expected 3 tab-separated fields 'query<TAB>positive<TAB>negative', "
                                                f"found {len(fields)}: {line[:120]!r}")
        query, pos, neg = (f.strip() for f in fields)
        for value, what in ((query, "query"), (pos, "positive"), (neg, "negative")):
            if not value:
                raise DataFormatError(path, lineno, f"empty {what} text")
        qid, pid, nid = text_id(query, "q"), text_id(pos, "d"), text_id(neg, "d")
        queries.setdefault(qid, query)
        texts.setdefault(pid, pos)
        texts.setdefault(nid, neg)
        groups.add(qid, pid, nid)
    return _pair_queries(source, groups, queries, texts, path)


def _load_id_triples(source: str, path: str, qrels_arg: str | None, ctx: _Context) -> _Loaded:
    corpus = _need(ctx.corpus, "document texts", source, "id-triples", "--corpus collection.tsv")
    query_arg = _need(ctx.queries, "query texts", source, "id-triples", "--queries queries.tsv")
    groups = _Groups()
    for lineno, line in iter_lines(path):
        fields = line.split()
        if len(fields) != 3:
            raise DataFormatError(path, lineno, f"expected 3 tab-separated ids 'qid<TAB>pid+<TAB>pid-', "
                                                f"found {len(fields)} fields: {line[:120]!r}")
        groups.add(*fields)
    query_texts, _ = resolve_queries(query_arg)
    texts, desc = resolve_docs(corpus, groups.docids())
    return _pair_queries(source, groups, query_texts, texts, desc)


def _load_irds_docpairs(source: str, dataset_id: str, qrels_arg: str | None, ctx: _Context) -> _Loaded:
    groups = _Groups()
    for qid, pos, neg in progress_bar(iter_dataset_docpairs(dataset_id), desc=f"{dataset_id} docpairs", unit="pair",
                                      mininterval=5.0, delay=5.0):
        groups.add(qid, pos, neg)
    query_texts = load_dataset_queries(dataset_id)
    return _pair_queries(source, groups, query_texts, _store_lookup(dataset_id, groups.docids()), dataset_id)


def _text_list(path: str, lineno: int, obj: dict, key: str) -> list[str]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise DataFormatError(path, lineno, f"'{key}' must be a list of texts, found {type(value).__name__}")
    out = []
    for i, text in enumerate(value):
        if not isinstance(text, str) or not text.strip():
            raise DataFormatError(path, lineno, f"'{key}'[{i}] must be a non-empty string, found {text!r:.60}")
        out.append(text.strip())
    return out


def _score_list(path: str, lineno: int, scores: dict, key: str, n: int) -> list[float | None]:
    if key not in scores or scores[key] is None:
        return [None] * n
    value = scores[key]
    if not isinstance(value, list) or len(value) != n:
        found = f"{len(value)} values" if isinstance(value, list) else type(value).__name__
        raise DataFormatError(path, lineno, f"'scores.{key}' must be a list of {n} numbers "
                                            f"(one per text of '{key}'), found {found}")
    out: list[float | None] = []
    for i, s in enumerate(value):
        if s is None:
            out.append(None)
        elif isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise DataFormatError(path, lineno, f"'scores.{key}'[{i}] {s!r:.40} is not a finite number (or null)")
        else:
            out.append(float(s))
    return out


def _load_jsonl(source: str, path: str, qrels_arg: str | None, ctx: _Context) -> _Loaded:
    groups, queries, texts = _Groups(), {}, {}
    first_line: dict[str, int] = {}
    teacher: dict[tuple[str, str], float] = {}
    for lineno, obj in _iter_jsonl(path):
        query = obj.get("query")
        if not isinstance(query, str) or not query.strip():
            raise DataFormatError(path, lineno, "'query' must be a non-empty string")
        query = query.strip()
        if "positives" not in obj and "negatives" not in obj:
            raise DataFormatError(path, lineno, "missing 'positives' and 'negatives' (lists of texts)")
        raw_qid = obj.get("qid")
        if raw_qid is None:
            qid = text_id(query, "q")
        elif isinstance(raw_qid, bool) or not isinstance(raw_qid, (str, int)) or not str(raw_qid).strip():
            raise DataFormatError(path, lineno, f"'qid' must be a non-empty string or an integer, found {raw_qid!r}")
        else:
            qid = str(raw_qid).strip()
        if qid in queries and queries[qid] != query:
            raise DataFormatError(path, lineno, f"query {qid!r} has another text than at line {first_line[qid]}")
        queries.setdefault(qid, query)
        first_line.setdefault(qid, lineno)
        scores = obj.get("scores") or {}
        if not isinstance(scores, dict):
            raise DataFormatError(path, lineno,
                                  "'scores' must be an object {\"positives\": [...], \"negatives\": [...]}")
        for key, positive in (("positives", True), ("negatives", False)):
            docs = _text_list(path, lineno, obj, key)
            for text, score in zip(docs, _score_list(path, lineno, scores, key, len(docs))):
                d = text_id(text, "d")
                texts.setdefault(d, text)
                groups.add(qid, d if positive else None, None if positive else d)
                if score is not None:
                    teacher.setdefault((qid, d), score)
    return _pair_queries(source, groups, queries, texts, path, teacher)


_LOADERS: dict[str, Callable[[str, str, str | None, _Context], _Loaded]] = {
    "candidates": _load_candidates,
    "run": _load_run,
    "jsonl": _load_jsonl,
    "text-triples": _load_text_triples,
    "id-triples": _load_id_triples,
    "irds-judged": _load_irds_judged,
    "irds-docpairs": _load_irds_docpairs,
}


# ---- putting sources together --------------------------------------------------------------------
def _qrels_per_source(qrels: str | os.PathLike | Sequence[str | None] | None, sources: Sequence[str],
                      kinds: Sequence[str]) -> list[str | None]:
    if qrels is None:
        return [None] * len(sources)
    if isinstance(qrels, (str, os.PathLike)):
        return [str(qrels) if kind in TAKES_QRELS else None for kind in kinds]
    given = [str(q) if q else None for q in qrels]
    if len(given) == 1:
        return [given[0] if kind in TAKES_QRELS else None for kind in kinds]
    if len(given) != len(sources):
        raise UsageError(f"--train-qrels: {len(given)} values for {len(sources)} --train sources; give one qrels "
                         "for all sources or one per source")
    for source, kind, q in zip(sources, kinds, given):
        if q and kind not in TAKES_QRELS:
            raise UsageError(f"training source {source} ({kind}) takes no qrels, got --train-qrels {q}")
    return given


def _drop_and_report(source: str, kind: str, loaded: _Loaded) -> list[TrainQuery]:
    kept, no_pos, no_neg = [], [], []
    for q in loaded.queries:
        if not q.positives:
            no_pos.append(q.qid)
        elif not q.negatives:
            no_neg.append(q.qid)
        else:
            kept.append(q)
    dropped = loaded.no_text + no_pos + no_neg
    parts = []
    if dropped:
        reasons = [f"{n} {why}" for n, why in ((len(no_pos), "with no positive"), (len(no_neg), "with no negative"),
                                               (len(loaded.no_text), "with no query text")) if n]
        total = len(loaded.queries) + len(loaded.no_text)
        parts.append(f"dropped {len(dropped)} of {total} queries ({', '.join(reasons)}; "
                     f"e.g. {', '.join(dropped[:_EXAMPLES])})")
    if loaded.missing_docs:
        parts.append(f"skipped {len(loaded.missing_docs)} documents with no text in {loaded.where} "
                     f"(e.g. {', '.join(loaded.missing_docs[:_EXAMPLES])})")
    if parts:
        logger.warning("training source %s (%s): %s", source, kind, "; ".join(parts))
    logger.info("training source %s (%s): %d queries, %d positives, %d negatives", source, kind, len(kept),
                sum(len(q.positives) for q in kept), sum(len(q.negatives) for q in kept))
    return kept


def _same_text(a: str, b: str) -> bool:
    return a.split() == b.split()  # the same query written with other spacing is the same query


def _merge(queries: Iterable[TrainQuery]) -> list[TrainQuery]:
    """One TrainQuery per qid, at its first appearance; later ones add their new documents."""
    merged: dict[str, TrainQuery] = {}
    for q in queries:
        first = merged.get(q.qid)
        if first is None:
            merged[q.qid] = q
            continue
        if not _same_text(first.text, q.text):
            raise UsageError(f"query {q.qid!r} has different texts in {first.source} ({first.text[:80]!r}) "
                             f"and {q.source} ({q.text[:80]!r})")
        pos_ids = {c.docid for c in first.positives}
        first.positives += [c for c in q.positives if c.docid not in pos_ids]
        pos_ids.update(c.docid for c in q.positives)
        neg_ids = {c.docid for c in first.negatives}
        first.negatives = [c for c in first.negatives if c.docid not in pos_ids]
        first.negatives += [c for c in q.negatives if c.docid not in pos_ids and c.docid not in neg_ids]
        if q.source not in first.source.split(" + "):
            first.source = f"{first.source} + {q.source}"
    return list(merged.values())


def _attach_teacher(queries: list[TrainQuery], teacher: str) -> None:
    scores = read_run(teacher)
    total = scored = 0
    for q in queries:
        run = scores.get(q.qid, {})
        for bucket in (q.positives, q.negatives):
            for i, c in enumerate(bucket):
                total += 1
                if c.docid in run:
                    bucket[i] = replace(c, teacher=run[c.docid])
                    scored += 1
    if scored == 0:
        logger.warning("teacher run %s scores none of the %d training candidates: do its qids and docids "
                       "match the training sources'?", teacher, total)
    else:
        logger.info("teacher run %s: scores %d of %d training candidates", teacher, scored, total)


def load_training_queries(*, sources: Sequence[str], qrels: str | Sequence[str | None] | None = None,
                          corpus: str | None = None, queries: str | None = None, rel_level: int | None = None,
                          negatives_depth: int | None = None, teacher: str | None = None,
                          negatives_run: str | None = None) -> list[TrainQuery]:
    """Read the training sources (see the module doc) into queries with positives and negatives.

    Args:
        sources: ``--train`` values, files or ir_datasets ids (``KIND:PATH`` forces a kind), in order.
        qrels: ``--train-qrels``: one file (or dataset name) for every source that takes qrels, or
            one per source (None / ``""`` for a source that takes none). For an ir_datasets judged
            source, it replaces the dataset's own qrels.
        corpus: ``--corpus``: documents for run and id-triples sources (a file such as
            ``collection.tsv``, or a dataset name), and more positive texts for candidates.
        queries: ``--queries``: query texts for run and id-triples sources (file or dataset name).
        rel_level: a positive is judged ``>= rel_level``; None: 2 on graded qrels (max grade > 1), else 1.
        negatives_depth: negatives from the top ``negatives_depth`` ranks of the first stage (ranked
            sources); None: the whole ranking.
        teacher: a TREC run of teacher scores, attached to every candidate it scores.
        negatives_run: the first-stage run that gives an ir_datasets judged source its negatives.

    Returns:
        The queries, in source order and then first appearance; each with >= 1 positive and >= 1 negative.

    Raises:
        UsageError: arguments that do not fit (no qrels for candidates, a missing corpus, ...).
        DataFormatError: a malformed line (file and line), an unknown kind of file.
        TrainingDataError: no query left with a positive and a negative.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [str(sources)]
    sources = [str(s) for s in sources]
    if not sources:
        raise UsageError("no training source: give at least one --train")
    if negatives_depth is not None and negatives_depth < 1:
        raise UsageError(f"negatives depth must be positive, got {negatives_depth}")
    detected = [detect_kind(s) for s in sources]
    kinds = [kind for kind, _ in detected]
    per_source_qrels = _qrels_per_source(qrels, sources, kinds)
    if negatives_run and "irds-judged" not in kinds:
        logger.warning("negatives_run %s is unused: only an ir_datasets judged source takes one", negatives_run)

    candidates = {target: read_candidates(target) for kind, target in detected if kind == "candidates"}
    pool: dict[str, str] = {}
    for _, _, docs in candidates.values():
        for d, text in docs.items():
            pool.setdefault(d, text)
    ctx = _Context(rel_level=rel_level, depth=negatives_depth, corpus=corpus, queries=queries,
                   negatives_run=negatives_run, pool=pool, candidates=candidates)

    kept: list[TrainQuery] = []
    for source, (kind, target), qrels_arg in zip(sources, detected, per_source_qrels):
        loaded = _LOADERS[kind](source, target, qrels_arg, ctx)
        kept += _drop_and_report(source, kind, loaded)
    result = _merge(kept)
    if not result:
        raise TrainingDataError(f"no training query with both a positive and a negative in {', '.join(sources)} "
                                "(see the warnings above)")
    if teacher:
        _attach_teacher(result, teacher)
    return result


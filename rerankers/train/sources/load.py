"""The dispatcher: :func:`load_training_queries` reads every ``--train`` source with the loader of its kind.

It detects each source's kind, hands out the qrels arguments, reads the candidates files once (their
texts serve every source), then per source: load, drop the queries with no positive or no negative
(one warning, one info line), and finally merges queries met in several sources and attaches the
teacher run. See the package doc.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, Sequence

from rerankers.data.texts import read_candidates
from rerankers.errors import TrainingDataError, UsageError
from rerankers.train.examples import TrainQuery
from rerankers.train.sources.base import _EXAMPLES, TAKES_QRELS, _Context, _Loaded, logger
from rerankers.train.sources.candidates import _load_candidates
from rerankers.train.sources.detect import detect_kind
from rerankers.train.sources.id_triples import _load_id_triples
from rerankers.train.sources.irds_docpairs import _load_irds_docpairs
from rerankers.train.sources.irds_judged import _load_irds_judged
from rerankers.train.sources.jsonl import _load_jsonl
from rerankers.train.sources.run import _load_run
from rerankers.train.sources.teacher_run import _attach_teacher
from rerankers.train.sources.text_triples import _load_text_triples

_LOADERS: dict[str, Callable[[str, str, str | None, _Context], _Loaded]] = {
    "candidates": _load_candidates,
    "run": _load_run,
    "jsonl": _load_jsonl,
    "text-triples": _load_text_triples,
    "id-triples": _load_id_triples,
    "irds-judged": _load_irds_judged,
    "irds-docpairs": _load_irds_docpairs,
}


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


def load_training_queries(*, sources: Sequence[str], qrels: str | Sequence[str | None] | None = None,
                          corpus: str | None = None, queries: str | None = None, rel_level: int | None = None,
                          negatives_depth: int | None = None, teacher: str | None = None,
                          negatives_run: str | None = None) -> list[TrainQuery]:
    """Read the training sources (see the package doc) into queries with positives and negatives.

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

"""Positives and negatives of the ranked kinds (candidates, run, irds-judged) from a ranking and qrels.

Per query: positives are the documents judged ``>= level``, those the ranking holds first (rank order),
then the other judged-relevant ones (qrels order); negatives are the ranking cut at ``depth`` ranks,
judged-relevant documents left out; labels are the qrels grade (negative grades count as 0), 0.0 for an
unjudged document. See the package doc.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from rerankers.data.trec import Qrels, Run, ranked
from rerankers.eval.metrics import default_rel_level
from rerankers.train.examples import Candidate, TrainQuery
from rerankers.train.sources.base import _Loaded, logger


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

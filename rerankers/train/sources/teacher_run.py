"""The ``teacher`` run: a TREC run of teacher scores (``qid Q0 docid rank score tag``) for distillation.

It sets :attr:`Candidate.teacher` on every training candidate it scores (by qid and docid), after
everything else; its scores win over training JSONL ``scores``.
"""
from __future__ import annotations

from dataclasses import replace

from rerankers.data.trec import read_run
from rerankers.train.examples import TrainQuery
from rerankers.train.sources.base import logger


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

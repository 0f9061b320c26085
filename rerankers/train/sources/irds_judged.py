"""The ``irds-judged`` kind: an ir_datasets id with qrels (``msmarco-passage/train/judged``).

Its qrels (or ``--train-qrels`` in their place), queries and document store; the negatives come from
``negatives_run``, a first-stage TREC run of its queries.
"""
from __future__ import annotations

from rerankers.data.datasets import load_dataset_qrels, load_dataset_queries
from rerankers.data.trec import read_run
from rerankers.train.sources.base import _Context, _Loaded, _need, _store_lookup
from rerankers.train.sources.ranked import _level, _needed, _ranked_queries


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

"""The ``run`` kind: a first-stage TREC run ``qid Q0 docid rank score tag``, with qrels, corpus and queries.

The run gives the ranking; query texts come from ``--queries``, document texts from the candidates
files of the call, then ``--corpus``.
"""
from __future__ import annotations

from collections import ChainMap

from rerankers.data.datasets import resolve_docs, resolve_queries
from rerankers.data.trec import read_run
from rerankers.train.sources.base import _Context, _Loaded, _need
from rerankers.train.sources.ranked import _level, _needed, _ranked_queries


def _load_run(source: str, path: str, qrels_arg: str | None, ctx: _Context) -> _Loaded:
    qrels = ctx.qrels(_need(qrels_arg, "qrels", source, "run", "--train-qrels FILE"))
    corpus = _need(ctx.corpus, "document texts", source, "run", "--corpus FILE")
    query_texts, _ = resolve_queries(_need(ctx.queries, "query texts", source, "run", "--queries FILE"))
    run = read_run(path)
    level = _level(ctx.rel_level, qrels, source)
    needed = _needed(run, run, qrels, level, ctx.depth)
    found, desc = resolve_docs(corpus, {d for d in needed if d not in ctx.pool})
    return _ranked_queries(source, run, query_texts, run, qrels, level, ctx.depth, ChainMap(found, ctx.pool), desc)

"""The ``candidates`` kind: rank_llm candidates files, with qrels.

A JSON list (``.json``) or JSONL (``.jsonl``) of ``{"query", "hits": [{"qid", "docid", "rank", "score",
"content"}]}``: queries, first-stage ranking and document texts in one file (read once per call by the
dispatcher, whose texts also serve the other sources). Positives missing from the file are looked up
in the other candidates files, then ``--corpus``.
"""
from __future__ import annotations

from rerankers.train.sources.base import _Context, _Loaded, _need
from rerankers.train.sources.ranked import _level, _needed, _ranked_queries


def _load_candidates(source: str, path: str, qrels_arg: str | None, ctx: _Context) -> _Loaded:
    qrels = ctx.qrels(_need(qrels_arg, "qrels", source, "candidates", "--train-qrels FILE"))
    queries, run, docs = ctx.candidates[path]
    level = _level(ctx.rel_level, qrels, source)
    texts, where = ctx.texts_with_corpus(docs, _needed(queries, run, qrels, level, ctx.depth))
    return _ranked_queries(source, queries, queries, run, qrels, level, ctx.depth, texts, where)

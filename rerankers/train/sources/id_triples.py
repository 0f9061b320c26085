"""The ``id-triples`` kind: MS MARCO ``qid<TAB>pid+<TAB>pid-`` lines, with corpus and queries.

Ids are kept and lines group by qid; texts come from ``--queries`` and ``--corpus``.
"""
from __future__ import annotations

from rerankers.data.datasets import resolve_docs, resolve_queries
from rerankers.data.lines import iter_lines
from rerankers.errors import DataFormatError
from rerankers.train.sources.base import _Context, _Groups, _Loaded, _need, _pair_queries


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

"""The ``text-triples`` kind: ``query<TAB>positive<TAB>negative`` lines of texts.

Ids are :func:`~.base.text_id` of the texts; lines of the same query text merge into one query.
"""
from __future__ import annotations

from rerankers.data.lines import iter_lines
from rerankers.errors import DataFormatError
from rerankers.train.sources.base import _Context, _Groups, _Loaded, _pair_queries, text_id


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

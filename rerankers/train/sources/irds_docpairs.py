"""The ``irds-docpairs`` kind: an ir_datasets id with docpairs (``msmarco-passage/train/triples-small``).

Its ``(qid, positive, negative)`` pairs grouped by qid, its queries, and its document store for the texts.
"""
from __future__ import annotations

from rerankers.data.datasets import iter_dataset_docpairs, load_dataset_queries
from rerankers.train.sources.base import _Context, _Groups, _Loaded, _pair_queries, _store_lookup
from rerankers.utils.progress import progress_bar


def _load_irds_docpairs(source: str, dataset_id: str, qrels_arg: str | None, ctx: _Context) -> _Loaded:
    groups = _Groups()
    for qid, pos, neg in progress_bar(iter_dataset_docpairs(dataset_id), desc=f"{dataset_id} docpairs", unit="pair",
                                      mininterval=5.0, delay=5.0):
        groups.add(qid, pos, neg)
    query_texts = load_dataset_queries(dataset_id)
    return _pair_queries(source, groups, query_texts, _store_lookup(dataset_id, groups.docids()), dataset_id)

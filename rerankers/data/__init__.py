"""Data: TREC runs and qrels, queries, corpora, candidates with texts, ir_datasets, packing.

Types: ``Run = dict[qid, dict[docid, float]]``, ``Qrels = dict[qid, dict[docid, int]]``,
queries and documents ``dict[id, str]``. Readers raise :class:`DataFormatError` naming file and line.
"""
from rerankers.data.texts import read_candidates, read_corpus, read_queries
from rerankers.data.trec import Qrels, Run, ranked, read_qrels, read_run, truncate_run, write_qrels, write_run
from rerankers.errors import DataFormatError, DatasetLoadError, UnknownDatasetError

__all__ = ["DataFormatError", "DatasetLoadError", "Qrels", "Run", "UnknownDatasetError", "ranked", "read_candidates",
           "read_corpus", "read_qrels", "read_queries", "read_run", "truncate_run", "write_qrels", "write_run"]

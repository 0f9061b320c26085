"""The inputs of a reranking: a first-stage run with the query and document texts it needs.

:func:`load_rerank_inputs` gathers them from files (a TREC run, candidates with texts, a query file,
a corpus) or a dataset (ir_datasets). Its :class:`UsageError` messages name the ``rerank eval``
flags that give each source, since the command line is where most users meet them.
"""
from __future__ import annotations

import logging
import os
from typing import Collection, Mapping

from rerankers.data.datasets import load_dataset_docs, load_dataset_queries, resolve_queries
from rerankers.data.texts import read_candidates, read_corpus
from rerankers.data.trec import Run, read_run, truncate_run
from rerankers.errors import UsageError

logger = logging.getLogger(__name__)


def _missing(needed: Collection[str], have: Mapping, what: str, source: str) -> None:
    absent = [x for x in needed if x not in have]
    if absent:
        raise UsageError(f"{len(absent)} {what} have no text in {source} (e.g. {', '.join(map(str, absent[:3]))})")


def load_rerank_inputs(*, run: str | os.PathLike | None = None, candidates: str | os.PathLike | None = None,
                       queries: str | None = None, corpus: str | os.PathLike | None = None,
                       dataset: str | None = None, depth: int = 100
                       ) -> tuple[Run, dict[str, str], dict[str, str]]:
    """Resolve the first-stage run, query texts and the texts of its top ``depth`` documents.

    Sources, in order of preference: the run from ``run`` (a TREC file, ``--run``), else
    ``candidates`` (``--candidates``); queries from ``queries`` (file or dataset name,
    ``--queries``), else ``candidates``, else ``dataset`` (``--dataset``); documents from
    ``corpus`` (``--corpus``), else ``candidates``, else ``dataset`` (ir_datasets document store).
    Only the texts the run needs are kept.

    Returns:
        ``(run, queries, docs)``: the whole first-stage ``run`` ``{qid: {docid: score}}`` (documents
        beyond ``depth`` stay in it, ranked below the reranked ones, so deep metrics such as
        R@1000 keep their meaning); ``queries`` ``{qid: text}`` for every query and ``docs``
        ``{docid: text}`` for every document in a query's top ``depth``.
    """
    if depth <= 0:
        raise UsageError(f"--depth must be positive, got {depth}")
    cand_queries = cand_docs = None
    if candidates:
        cand_queries, cand_run, cand_docs = read_candidates(candidates)
    if run:
        first_stage = read_run(run)
    elif candidates:
        first_stage = cand_run
    else:
        raise UsageError("--model needs a first-stage run: --run FILE or --candidates FILE")
    head = truncate_run(first_stage, depth)
    qids = sorted(first_stage)
    docids = sorted({d for docs in head.values() for d in docs})

    if queries:
        all_queries, qsource = resolve_queries(queries)
    elif cand_queries is not None:
        all_queries, qsource = cand_queries, str(candidates)
    elif dataset:
        all_queries, qsource = load_dataset_queries(dataset), dataset
    else:
        raise UsageError("reranking needs query texts: --queries, --candidates or --dataset")
    _missing(qids, all_queries, "queries of the run", qsource)
    query_texts = {q: all_queries[q] for q in qids}

    if corpus:
        texts, dsource = read_corpus(corpus, ids=set(docids)), str(corpus)
    elif cand_docs is not None:
        texts, dsource = cand_docs, str(candidates)
    elif dataset:
        store, dsource = load_dataset_docs(dataset), dataset
        try:
            texts = store.get_many(docids)
        except KeyError as e:
            raise UsageError(f"document {e.args[0]!r} of the run is not in {dsource}") from None
    else:
        raise UsageError("reranking needs document texts: --corpus, --candidates or --dataset")
    _missing(docids, texts, "documents of the run", dsource)
    doc_texts = {d: texts[d] for d in docids}
    logger.info("reranking %d queries x <= %d candidates (%d distinct documents)", len(qids), depth, len(docids))
    return first_stage, query_texts, doc_texts

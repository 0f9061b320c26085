"""The main job on the bundled sample collection: BM25 retrieve -> rerank -> evaluate -> table.

``rerank demo --out DIR`` (and ``make demo``) runs :func:`run_demo`. The sample (``rerankers/
sample_data``: ``queries.tsv``, ``collection.tsv``, ``qrels.txt``) ships with the package, so this
needs no download. Outputs in ``DIR``: ``bm25.trec``, ``reranked.trec`` (with ``--model``), and the report files of :meth:`Report.save`.
"""
from __future__ import annotations

import argparse
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Mapping

from rerankers.data.texts import read_corpus, read_queries
from rerankers.data.trec import Run, read_qrels, write_run
from rerankers.eval.metrics import evaluate
from rerankers.eval.report import Report, ReportRow
from rerankers.retrieval import BM25Config, bm25_retrieve
from rerankers.errors import RerankersError

logger = logging.getLogger(__name__)

SAMPLE_FILES = ("queries.tsv", "collection.tsv", "qrels.txt")
DEMO_METRICS = ("MRR@10", "nDCG@10", "MAP@1000", "R@100", "P@10")


def sample_data_dir() -> Path:
    """The folder of the bundled sample collection."""
    return Path(str(resources.files("rerankers") / "sample_data"))


def demo_rerank_step(run: Run, queries: Mapping[str, str], docs: Mapping[str, str],
                     model: str | os.PathLike | None = None, device: str | None = None,
                     dtype: str | None = None) -> tuple[str, Run, dict[str, float]] | None:
    """The reranking step of the demo: score every BM25 candidate with ``model``.

    A cross-encoder only reranks usefully once trained, and none ships with the package (weights
    are too large to bundle, and nothing may be downloaded), so without ``model`` the step is
    skipped and the demo reports the BM25 row alone. With ``--model PATH_OR_NAME`` (a saved
    CrossEncoder, a local checkpoint, or a preset where the hub is reachable) it returns
    ``(name, reranked_run, throughput)``.
    """
    if model is None:
        return None
    from rerankers.eval.rerank_cmd import rerank_with_model  # the same step as `rerank eval --model`

    args = argparse.Namespace(model=model, device=device, dtype=dtype, batch_tokens=None, depth=None)
    reranked, throughput = rerank_with_model(args, run, queries, docs)  # depth None: every candidate
    return f"BM25 >> {Path(str(model)).name}", reranked, throughput


def run_demo(out_dir: str | os.PathLike = "demo_out", k: int = 100, data_dir: str | os.PathLike | None = None,
             metrics=DEMO_METRICS, model: str | os.PathLike | None = None, device: str | None = None,
             dtype: str | None = None) -> Report:
    """Retrieve with BM25, rerank (:func:`demo_rerank_step`), evaluate; write runs and report to ``out_dir``."""
    data = Path(data_dir) if data_dir is not None else sample_data_dir()
    missing = [f for f in SAMPLE_FILES if not (data / f).is_file()]
    if missing:
        raise RerankersError(f"sample collection incomplete in {data}: missing {', '.join(missing)}")
    out = Path(out_dir)
    queries = read_queries(data / "queries.tsv")
    docs = read_corpus(data / "collection.tsv")
    qrels = read_qrels(data / "qrels.txt")
    logger.info("sample collection: %d queries, %d passages, %d judgments", len(queries), len(docs),
                sum(map(len, qrels.values())))

    run = bm25_retrieve(docs, queries, k=k, config=BM25Config())
    write_run(run, out / "bm25.trec", tag="bm25")
    rows = [ReportRow(name="BM25", source=str(out / "bm25.trec"),
                      result=evaluate(run, qrels, metrics, run_name="BM25", qrels_name=str(data / "qrels.txt")))]

    step = demo_rerank_step(run, queries, docs, model=model, device=device, dtype=dtype)
    if step is None:
        logger.info("no --model given: reporting BM25 only (pass --model PATH to add the reranked row)")
    else:
        name, reranked, throughput = step
        write_run(reranked, out / "reranked.trec", tag="reranked")
        rows.append(ReportRow(name=name, source=str(out / "reranked.trec"), extra=dict(throughput or {}),
                              result=evaluate(reranked, qrels, metrics, run_name=name,
                                              qrels_name=str(data / "qrels.txt"))))
    report = Report.build(rows, qrels=str(data / "qrels.txt"))
    report.save(out)
    logger.info("demo outputs in %s", out)
    return report

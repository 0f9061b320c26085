"""Evaluation on a dev set during training, through the same code as ``rerank eval --model``.

The dev candidates (a candidates file with texts) are reranked by :meth:`Reranker.rerank_run`
and scored by :func:`rerankers.eval.evaluate`. With several processes each reranks a share of
the queries and the runs are gathered, so the metrics equal a one-process evaluation.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from rerankers.data.texts import read_candidates
from rerankers.data.trec import Qrels, Run
from rerankers.train.distributed import ProcessInfo, gather_objects

logger = logging.getLogger(__name__)

DEV_METRICS = ("MRR@10", "nDCG@10")


@dataclass
class DevSet:
    """queries {qid: text}, run {qid: {docid: score}}, docs {docid: text}, qrels, and their names."""

    queries: dict[str, str]
    run: Run
    docs: dict[str, str]
    qrels: Qrels
    qrels_name: str
    metrics: tuple[str, ...]


def load_dev_set(candidates: str, qrels: str, metric: str) -> DevSet:
    """Read the dev candidates and judgments (a file or a dataset name); check the metric name."""
    from rerankers.data.datasets import resolve_qrels
    from rerankers.eval.metric_names import parse_metric

    parse_metric(metric)
    queries, run, docs = read_candidates(candidates)
    judged, name = resolve_qrels(qrels)
    metrics = tuple(dict.fromkeys((*DEV_METRICS, metric)))
    return DevSet(queries, run, docs, judged, name, metrics)


def evaluate_dev(model, dev: DevSet, *, device, autocast_dtype, depth: int, batch_tokens: int,
                 info: ProcessInfo) -> tuple[dict[str, float], dict[str, float]]:
    """({metric: mean}, {"pairs_per_s", "tokens_per_s"}) of ``model`` reranking the dev set; the model is
    left in eval mode (the caller puts it back in training mode)."""
    from rerankers.eval.metrics import evaluate
    from rerankers.reranker import Reranker

    reranker = Reranker(model, device=device, dtype=autocast_dtype or "float32", batch_tokens=batch_tokens)
    mine = sorted(dev.run)[info.rank::info.world_size]
    part = reranker.rerank_run({q: dev.run[q] for q in mine}, dev.queries, dev.docs, depth=depth) if mine else {}
    stats = reranker.last_stats
    reranked: Run = {}
    for shard in gather_objects(part, info):
        reranked.update(shard)
    result = evaluate(reranked, dev.qrels, list(dev.metrics), run_name="dev", qrels_name=dev.qrels_name)
    return dict(result.means), {"pairs_per_s": stats.model_pairs_per_s, "tokens_per_s": stats.model_tokens_per_s}

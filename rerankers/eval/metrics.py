"""Evaluation of a run against qrels through ranx, with trec_eval's semantics.

What matches trec_eval (tested against trec_eval's own test suite to 1e-4):

- Ranking order: score descending, ties broken by docid descending (trec_eval ignores the rank
  column and breaks ties this way); ranx would break ties arbitrarily, so the run is re-scored by
  rank before it reaches ranx.
- Queries of the run that have no judgments are dropped (logged as a warning). Judged queries that
  the run lacks are left out of the mean by default, as trec_eval does; ``missing_as_zero=True``
  counts them with score 0 (trec_eval ``-c``).
- Relevance level (trec_eval ``-l``): binary metrics (MAP, MRR, P, R, ...) count a document as
  relevant when its grade >= ``rel_level``. Default: 2 when the qrels are graded with a maximum
  grade above 1 (TREC DL's 0-3 scale: "highly relevant or perfectly relevant", as the track
  reports MAP/MRR/R), otherwise 1. nDCG always uses the grades as gains (every grade > 0 counts;
  linear gain, trec_eval's ``ndcg``), whatever the level.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from rerankers.data.trec import Qrels, Run, ranked
from rerankers.errors import EvaluationError
from rerankers.eval.metric_names import DEFAULT_METRICS, MetricSpec, parse_metrics

logger = logging.getLogger(__name__)

_EMPTY_DOC = "\x00rerankers-no-result"  # stands for "nothing retrieved" (never a real docid)


@dataclass
class EvalResult:
    """Metrics of one run.

    Attributes:
        means: ``{display_name: mean over the evaluated queries}``, in the order asked.
        per_query: ``{display_name: {qid: score}}``.
        qids: the evaluated queries (sorted).
        rel_level: the relevance level used by the binary metrics.
        dropped_qids: run queries without judgments (not evaluated).
        missing_qids: judged queries absent from the run (scored 0 if ``missing_as_zero``).
    """

    means: dict[str, float]
    per_query: dict[str, dict[str, float]]
    qids: list[str]
    rel_level: int
    dropped_qids: list[str] = field(default_factory=list)
    missing_qids: list[str] = field(default_factory=list)


def default_rel_level(qrels: Qrels) -> int:
    """2 for graded qrels whose maximum grade exceeds 1 (TREC DL), else 1."""
    top = max((g for docs in qrels.values() for g in docs.values()), default=1)
    return 2 if top > 1 else 1


def check_rel_level(qrels: Qrels, rel_level: int | None, metrics: Sequence[str] | None = None,
                    qrels_name: str = "qrels") -> None:
    """Warn where ``rel_level`` exceeds every grade of ``qrels`` while a binary metric is asked for: no query
    has a relevant document, so MAP, MRR, P@k, R@k ... are 0 for every run (nDCG still uses the grades)."""
    if rel_level is None or not qrels:
        return
    binary = [s.display for s in parse_metrics(metrics or DEFAULT_METRICS) if s.binary]
    top = max((g for docs in qrels.values() for g in docs.values()), default=0)
    if binary and rel_level > top:
        logger.warning("relevance level %d (--rel-level) is above every grade of %s (top grade %d): no query has "
                       "a relevant document, so %s give 0 for every run", rel_level, qrels_name, top, ", ".join(binary))


def _trec_order_scores(docs: Mapping[str, float]) -> dict[str, float]:
    """Replace scores by n, n-1, ..., 1 following trec_eval's order (so ranx cannot reorder ties)."""
    order = ranked(docs)
    n = len(order)
    return {docid: float(n - i) for i, (docid, _) in enumerate(order)}


def evaluate(run: Run, qrels: Qrels, metrics: Sequence[str] | None = None, rel_level: int | None = None,
             missing_as_zero: bool = False, run_name: str = "run", qrels_name: str = "qrels",
             check_level: bool = True) -> EvalResult:
    """Evaluate ``run`` on ``qrels`` with ranx (trec_eval semantics, see the module docstring).

    Args:
        run: ``{qid: {docid: score}}``.
        qrels: ``{qid: {docid: grade}}``.
        metrics: metric names (see :mod:`rerankers.eval.metric_names`); default
            ``MRR@10, nDCG@10, nDCG@100, MAP@1000, R@100, R@1000, P@10``.
        rel_level: minimum grade counted as relevant by binary metrics; None = :func:`default_rel_level`.
        missing_as_zero: count judged queries absent from the run with score 0 (trec_eval ``-c``).
        run_name, qrels_name: used in warnings and errors (e.g. the file paths).
        check_level: warn where ``rel_level`` exceeds every grade (:func:`check_rel_level`); False where the
            caller checked once for several runs.

    Raises:
        UnknownMetricError: a metric name is not recognised.
        EvaluationError: no query of the run is judged, or the run or qrels are empty.
    """
    specs: list[MetricSpec] = parse_metrics(metrics or DEFAULT_METRICS)
    if not qrels:
        raise EvaluationError(f"{qrels_name}: no judgments")
    if not any(run.values()):
        raise EvaluationError(f"{run_name}: the run is empty")
    if rel_level is None:
        rel_level = default_rel_level(qrels)
    if rel_level < 1:
        raise EvaluationError(f"relevance level must be >= 1, got {rel_level}")
    if check_level:
        check_rel_level(qrels, rel_level, [s.display for s in specs], qrels_name)

    judged = [q for q in run if q in qrels and run[q]]
    dropped = sorted(q for q in run if q not in qrels)
    missing = sorted(q for q in qrels if q not in run or not run[q])
    if not judged:
        examples = ", ".join(sorted(run)[:3])
        raise EvaluationError(f"none of the {len(run)} queries of {run_name} (e.g. {examples}) appears in "
                              f"{qrels_name}: wrong qrels for this run?")
    if dropped:
        logger.warning("%s: %d of %d queries have no judgments in %s and are not evaluated (as trec_eval "
                       "does), e.g. %s", run_name, len(dropped), len(run), qrels_name, ", ".join(dropped[:3]))
    if missing:
        if missing_as_zero:
            logger.info("%s: %d judged queries are missing from the run and count 0", run_name, len(missing))
        else:
            logger.warning("%s: %d judged queries of %s are missing from the run and are not counted "
                           "(pass missing_as_zero / --missing-as-zero to count them as 0, like trec_eval -c)",
                           run_name, len(missing), qrels_name)
    qids = sorted(judged + (missing if missing_as_zero else []))
    ranx_run = {q: (_trec_order_scores(run[q]) if q in run and run[q] else {_EMPTY_DOC: 0.0}) for q in qids}
    ranx_qrels = {q: {d: int(g) for d, g in qrels[q].items()} for q in qids}

    from_ranx = [s.ranx_name(rel_level) for s in specs if s.ranx != "bpref"]
    scores = _ranx_per_query(ranx_qrels, ranx_run, from_ranx) if from_ranx else {}
    for s in specs:
        if s.ranx == "bpref":
            scores[s.ranx_name(rel_level)] = np.array([_bpref(ranx_run[q], ranx_qrels[q], rel_level) for q in qids])
    per_query = {s.display: {q: float(v) for q, v in zip(qids, scores[s.ranx_name(rel_level)])} for s in specs}
    means = {s.display: float(np.mean(scores[s.ranx_name(rel_level)])) for s in specs}
    return EvalResult(means=means, per_query=per_query, qids=qids, rel_level=rel_level,
                      dropped_qids=dropped, missing_qids=missing)


def _bpref(ranking: Mapping[str, float], judgments: Mapping[str, int], rel_level: int) -> float:
    """trec_eval's bpref of one query (``ranking``: docid -> rank score, higher first).

    Computed here rather than by ranx: ranx 0.3 returns 0 for a query without judged non-relevant
    documents and, where a query has no relevant document, at times 0 for every query of the batch
    (divisions by zero inside numba).
    As in trec_eval, grades >= ``rel_level`` are relevant, 0 <= grade < ``rel_level`` judged
    non-relevant, and negative grades (trec_eval's non-pool/unjudged markers) count as unjudged.
    """
    num_rel = sum(1 for g in judgments.values() if g >= rel_level)
    num_nonrel = sum(1 for g in judgments.values() if 0 <= g < rel_level)
    if num_rel == 0:
        return 0.0
    total, nonrel_above = 0.0, 0
    for docid in sorted(ranking, key=ranking.__getitem__, reverse=True):
        grade = judgments.get(docid)
        if grade is None or grade < 0:
            continue
        if grade >= rel_level:
            total += 1.0 - (min(nonrel_above, num_rel) / min(num_rel, num_nonrel) if nonrel_above else 0.0)
        else:
            nonrel_above += 1
    return total / num_rel


def _ranx_per_query(qrels: dict, run: dict, names: list[str]) -> dict[str, np.ndarray]:
    """ranx per-query scores for ``names`` (qrels and run share keys and key order)."""
    from ranx import evaluate as ranx_evaluate  # imported lazily: numba start-up costs seconds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's NumbaTypeSafetyWarning on hashed ids
        # ranx mis-keys a single metric with a "-lN" suffix: always ask for at least two
        out = ranx_evaluate(qrels, run, names if len(names) > 1 else names * 2, return_mean=False,
                            save_results_in_run=False)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}

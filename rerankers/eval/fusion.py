"""Fusion of a reranked run with its first stage, through ranx's ``fuse``.

Rerankers trained on little data are used interpolated with the first stage: ``wsum`` is ranx's
weighted sum of per-query min-max normalised scores (``weight`` on the reranked run, ``1 - weight``
on the first stage); ``rrf`` is reciprocal rank fusion, ``sum 1 / (k + rank)`` (Cormack et al. 2009,
k = 60). Documents a run does not hold contribute nothing from it.
"""
from __future__ import annotations

from typing import Mapping

from rerankers.data.trec import Run
from rerankers.errors import UsageError

FUSIONS = ("rrf", "wsum")


def check_fusion(method: str, weight: float = 0.5, k: int = 60) -> None:
    """UsageError naming the flag for a fusion that cannot run (checked before any work, and by :func:`fuse_runs`)."""
    if method not in FUSIONS:
        raise UsageError(f"--fuse must be one of {', '.join(FUSIONS)}, got {method!r}")
    if not 0.0 <= weight <= 1.0:
        raise UsageError(f"--fuse-weight must be in [0, 1], got {weight}")
    if k < 1:
        raise UsageError(f"the RRF constant k must be positive, got {k}")


def fuse_runs(first_stage: Mapping[str, Mapping[str, float]], reranked: Mapping[str, Mapping[str, float]],
              method: str = "rrf", weight: float = 0.5, k: int = 60) -> Run:
    """The fused run {qid: {docid: score}} over the queries of ``reranked``."""
    check_fusion(method, weight, k)
    import ranx

    qids = [q for q in reranked if reranked[q]]
    runs = [ranx.Run({q: {d: float(s) for d, s in first_stage.get(q, {}).items()} for q in qids if first_stage.get(q)}),
            ranx.Run({q: {d: float(s) for d, s in reranked[q].items()} for q in qids})]
    if method == "rrf":
        fused = ranx.fuse(runs=runs, norm=None, method="rrf", params={"k": k})
    else:
        fused = ranx.fuse(runs=runs, norm="min-max", method="wsum", params={"weights": [1.0 - weight, weight]})
    return {q: {d: float(s) for d, s in docs.items()} for q, docs in fused.to_dict().items()}

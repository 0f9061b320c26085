"""Paired significance tests between runs on per-query scores.

- ``student``: two-sided paired t-test (ranx's ``paired_student_t_test``, i.e. scipy ``ttest_rel``).
- ``fisher``: two-sided paired randomization test (Fisher; Smucker et al., CIKM 2007): the p-value
  is the share of random sign flips of the per-query differences whose mean difference is at least
  as large (in absolute value) as the observed one. Implemented here with numpy and a seeded
  generator, so that it is reproducible (ranx's numba version draws in parallel threads).
"""
from __future__ import annotations

import logging
import math
from typing import Mapping

import numpy as np

from rerankers.errors import EvaluationError

logger = logging.getLogger(__name__)

TESTS = ("student", "fisher")


def paired_p_value(control: np.ndarray, treatment: np.ndarray, test: str = "student",
                   n_permutations: int = 10_000, seed: int = 42) -> float:
    """Two-sided p-value of the paired difference between two score vectors of the same queries.

    Args:
        control, treatment: ``(Q,)`` per-query scores, aligned by query.
        test: ``"student"`` or ``"fisher"``.
        n_permutations: random sign flips for the Fisher test.
        seed: random seed for the Fisher test.

    Returns 1.0 where the two vectors are identical (no evidence of a difference).
    """
    control = np.asarray(control, dtype=np.float64)
    treatment = np.asarray(treatment, dtype=np.float64)
    if control.shape != treatment.shape or control.ndim != 1:
        raise ValueError(f"paired scores must be 1-D of equal length, got {control.shape} and {treatment.shape}")
    diff = treatment - control
    if len(diff) < 2 or np.allclose(diff, 0.0, atol=1e-12):
        return 1.0
    if test == "student":
        from ranx.statistical_tests import paired_student_t_test

        p, _ = paired_student_t_test(control, treatment, max_p=0.05)
        return 1.0 if math.isnan(p) else float(p)
    if test == "fisher":
        rng = np.random.default_rng(seed)
        observed = abs(diff.mean())
        hits, done, chunk = 0, 0, max(1, min(n_permutations, 2_000_000 // len(diff)))
        while done < n_permutations:
            m = min(chunk, n_permutations - done)
            signs = rng.integers(0, 2, size=(m, len(diff)), dtype=np.int8) * 2 - 1
            hits += int(np.count_nonzero(np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12))
            done += m
        return (hits + 1) / (n_permutations + 1)  # the observed assignment counts: never p = 0
    raise EvaluationError(f"unknown significance test {test!r}; choose one of {', '.join(TESTS)}")


def compare_to_baseline(baseline: Mapping[str, Mapping[str, float]], other: Mapping[str, Mapping[str, float]],
                        test: str = "student", **kwargs) -> dict[str, float]:
    """p-values per metric for ``other`` against ``baseline``, on the queries both evaluated.

    Args:
        baseline, other: per-query scores ``{metric: {qid: score}}`` (``EvalResult.per_query``).
        test: ``"student"`` or ``"fisher"``; further keyword arguments go to :func:`paired_p_value`.
    """
    if test not in TESTS:
        raise EvaluationError(f"unknown significance test {test!r}; choose one of {', '.join(TESTS)}")
    out: dict[str, float] = {}
    for metric, base_scores in baseline.items():
        if metric not in other:
            continue
        qids = sorted(set(base_scores) & set(other[metric]))
        if len(qids) < len(base_scores) or len(qids) < len(other[metric]):
            logger.warning("significance test for %s on the %d queries both runs have (of %d and %d)",
                           metric, len(qids), len(base_scores), len(other[metric]))
        if not qids:
            continue
        out[metric] = paired_p_value(np.array([base_scores[q] for q in qids]),
                                     np.array([other[metric][q] for q in qids]), test, **kwargs)
    return out

"""Metric names, cut-offs, relevance levels, tie order and significance tests on hand-made cases."""
import math

import numpy as np
import pytest
from scipy.stats import ttest_rel

from rerankers.errors import EvaluationError, UnknownMetricError
from rerankers.eval.metric_names import parse_metric, parse_metrics
from rerankers.eval.metrics import default_rel_level, evaluate
from rerankers.eval.significance import compare_to_baseline, paired_p_value


@pytest.mark.parametrize("name, display, ranx, binary", [
    ("MRR@10", "MRR@10", "mrr@10", True), ("recip_rank", "MRR", "mrr", True),
    ("nDCG@10", "nDCG@10", "ndcg@10", False), ("ndcg_cut_100", "nDCG@100", "ndcg@100", False),
    ("MAP@1000", "MAP@1000", "map@1000", True), ("map_cut_5", "MAP@5", "map@5", True),
    ("R@100", "R@100", "recall@100", True), ("recall_1000", "R@1000", "recall@1000", True),
    ("P@10", "P@10", "precision@10", True), ("P_5", "P@5", "precision@5", True),
    ("precision@10", "P@10", "precision@10", True), ("Rprec", "Rprec", "r-precision", True),
    ("success_10", "Success@10", "hit_rate@10", True), ("f1", "F1", "f1", True),
    ("ndcg_burges@10", "nDCG_Burges@10", "ndcg_burges@10", False),
])
def test_names(name, display, ranx, binary):
    spec = parse_metric(name)
    assert (spec.display, spec.ranx, spec.binary) == (display, ranx, binary)
    assert spec.ranx_name(2) == (f"{ranx}-l2" if binary else ranx)


@pytest.mark.parametrize("bad", ["foo", "P", "ndcg@0", "map-l2", "Rprec@5", "rbp"])
def test_bad_names(bad):
    with pytest.raises(UnknownMetricError):
        parse_metric(bad)


def test_parse_metrics_splits_and_dedupes():
    assert [s.display for s in parse_metrics(["MRR@10,nDCG@10", "mrr@10"])] == ["MRR@10", "nDCG@10"]


def test_cutoffs_levels_and_ties():
    qrels = {"q": {"rel": 2, "part": 1, "bad": -1}}
    run = {"q": {f"n{i:02d}": 100.0 - i for i in range(10)} | {"part": 95.5, "rel": 50.0}}
    r = evaluate(run, qrels, ["MRR@10", "MRR", "nDCG@10", "P@10"])
    assert r.rel_level == 2  # grades above 1: TREC DL convention
    assert r.means["MRR@10"] == 0.0 and r.means["MRR"] == pytest.approx(1 / 12)  # "rel" is 12th
    assert r.means["P@10"] == 0.0
    # nDCG ignores the level: "part" (gain 1) at rank 6 counts, ideal = [2, 1]
    assert r.means["nDCG@10"] == pytest.approx((1 / math.log2(7)) / (2 + 1 / math.log2(3)))
    r1 = evaluate(run, qrels, ["MRR@10"], rel_level=1)
    assert r1.means["MRR@10"] == pytest.approx(1 / 6)
    # ties: trec_eval orders tied scores by docid descending, whatever the input order
    tied = {"q": {"a": 1.0, "rel": 1.0, "z": 1.0}}
    assert evaluate(tied, qrels, ["MRR"]).means["MRR"] == pytest.approx(1 / 2)  # z, rel, a
    burges = evaluate({"q": {"rel": 2.0, "part": 1.0}}, qrels, ["nDCG_Burges@10", "nDCG@10"])
    assert burges.means == {"nDCG_Burges@10": pytest.approx(1.0), "nDCG@10": pytest.approx(1.0)}


def test_default_rel_level_and_errors():
    assert default_rel_level({"q": {"a": 1, "b": 0}}) == 1
    assert default_rel_level({"q": {"a": 3}}) == 2
    with pytest.raises(EvaluationError, match="none of the 1 queries of r.trec"):
        evaluate({"x": {"a": 1.0}}, {"q": {"a": 1}}, run_name="r.trec")
    with pytest.raises(EvaluationError, match="relevance level"):
        evaluate({"q": {"a": 1.0}}, {"q": {"a": 1}}, rel_level=0)


def test_significance():
    rng = np.random.default_rng(0)
    a = rng.random(40)
    b = a + 0.1 + 0.01 * rng.standard_normal(40)
    assert paired_p_value(a, b, "student") == pytest.approx(ttest_rel(a, b).pvalue)
    # no permutation reaches the observed difference: p = (0 + 1) / (2000 + 1), never 0 (issue 10, defect 13)
    assert paired_p_value(a, b, "fisher", n_permutations=2000) == pytest.approx(1 / 2001)
    assert paired_p_value(a, a, "fisher") == 1.0 and paired_p_value(a, a, "student") == 1.0
    noise = a + 0.01 * rng.standard_normal(40)
    p1 = paired_p_value(a, noise, "fisher", n_permutations=2000, seed=1)
    assert 0.0 < p1 <= 1.0 and p1 == paired_p_value(a, noise, "fisher", n_permutations=2000, seed=1)
    pv = compare_to_baseline({"m": {"1": 0.1, "2": 0.2, "3": 0.3}}, {"m": {"1": 0.5, "2": 0.6, "3": 0.75, "4": 1.0}})
    assert set(pv) == {"m"} and pv["m"] < 0.05
    with pytest.raises(EvaluationError):
        compare_to_baseline({"m": {"1": 0.1}}, {"m": {"1": 0.2}}, test="wilcoxon")


def test_bpref_with_queries_lacking_relevant_or_nonrelevant_documents():
    """trec_eval's bpref per query, even where another query of the batch has no relevant (b) or no
    judged non-relevant (c) document (ranx returned 0 for every query then); grade -1 is unjudged."""
    qrels = {"a": {"r1": 1, "n1": 0, "r2": 1, "u": -1}, "b": {"n": 0}, "c": {"r": 1}}
    run = {"a": {"r1": 4.0, "u": 3.5, "n1": 3.0, "x": 2.0, "r2": 1.0}, "b": {"n": 1.0}, "c": {"r": 1.0}}
    r = evaluate(run, qrels, ["bpref"], rel_level=1)
    # a: r1 above every non-relevant (1); r2 below n1: 1 - min(1, R=2) / min(R=2, N=1) = 0
    assert r.per_query["bpref"] == {"a": 0.5, "b": 0.0, "c": 1.0}

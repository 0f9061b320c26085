"""Our metrics reproduce trec_eval's own expected outputs (its test suite, in ../shared/data/trec_eval)."""
from __future__ import annotations

import pytest

from rerankers.data.trec import read_qrels, read_run
from rerankers.errors import UnknownMetricError
from rerankers.eval.metric_names import parse_metric
from rerankers.eval.metrics import evaluate

# trec_eval measures we expose (ours accept trec_eval's names); each must appear in the files below.
EXPECTED_COVERED = {"map", "recip_rank", "P_10", "recall_100", "recall_1000", "ndcg", "ndcg_cut_10",
                    "ndcg_cut_100", "map_cut_1000", "Rprec", "bpref", "success_10", "set_F", "num_rel_ret"}
SUMMED = {"num_rel_ret"}  # trec_eval's "all" line sums these over queries instead of averaging


def _expected(path) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """trec_eval output -> (means {measure: value}, per-query {measure: {qid: value}})."""
    means, per_query = {}, {}
    for line in path.read_text().splitlines():
        name, qid, value = line.split()
        try:
            v = float(value)
        except ValueError:  # runid, relstring
            continue
        if qid == "all":
            means[name] = v
        else:
            per_query.setdefault(name, {})[qid] = v
    return means, per_query


def _ours(names):
    out = []
    for name in names:
        try:
            parse_metric(name)
        except UnknownMetricError:
            continue
        out.append(name)
    return out


@pytest.fixture(scope="module")
def suite(shared_data):
    return shared_data / "trec_eval" / "test"


@pytest.mark.parametrize("qrels_file, run_file, expected_file, kwargs", [
    ("qrels.test", "results.test", "out.test.a", {}),                     # -m all_trec
    ("qrels.test", "results.test", "out.test.aq", {}),                    # -q
    ("qrels.rel_level", "results.test", "out.test.aql", {}),              # -l2 (our default for grades > 1)
    ("qrels.rel_level", "results.test", "out.test.aql", {"rel_level": 2}),
    ("qrels.test", "results.trunc", "out.test.aqc", {"missing_as_zero": True}),  # -c
])
def test_matches_trec_eval(suite, qrels_file, run_file, expected_file, kwargs):
    means, per_query = _expected(suite / expected_file)
    names = _ours(means)
    assert EXPECTED_COVERED <= set(names), f"not compared: {EXPECTED_COVERED - set(names)}"
    result = evaluate(read_run(suite / run_file), read_qrels(suite / qrels_file), names, **kwargs)
    assert len(result.qids) == int(means["num_q"])
    for name in names:
        display = parse_metric(name).display
        ours = result.means[display] * (len(result.qids) if name in SUMMED else 1)
        assert ours == pytest.approx(means[name], abs=1e-4), name
        for qid, value in per_query.get(name, {}).items():
            assert result.per_query[display][qid] == pytest.approx(value, abs=1e-4), (name, qid)


def test_missing_queries_left_out_without_c(suite):
    """Without -c, trec_eval averages over the run's queries only (results.trunc lacks query 302)."""
    result = evaluate(read_run(suite / "results.trunc"), read_qrels(suite / "qrels.test"), ["map"])
    assert result.qids == ["301", "303"] and result.missing_qids == ["302"]
    with_c = evaluate(read_run(suite / "results.trunc"), read_qrels(suite / "qrels.test"), ["map"],
                      missing_as_zero=True)
    assert with_c.per_query["MAP"]["302"] == 0.0
    assert with_c.means["MAP"] == pytest.approx(result.means["MAP"] * 2 / 3)

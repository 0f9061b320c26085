"""load_rerank_inputs: the first-stage run with the texts it needs, from files, candidates or a dataset.

The dataset branch runs here over stand-ins for ir_datasets; test_ir_datasets_bridge.py runs it on
ir_datasets' own loading code.
"""
from __future__ import annotations

import json

import pytest

import rerankers.data.inputs as inputs
from rerankers.data.inputs import load_rerank_inputs
from rerankers.errors import UsageError

TEXTS = {"a": "apples are red", "b": "bananas are yellow", "c": "cherries grow on trees"}


@pytest.fixture()
def files(tmp_path):
    """A run (q1: b, a, c; q2: c), a corpus, queries, and candidates that disagree with both on texts."""
    (tmp_path / "run.trec").write_text("q1 Q0 b 1 3.0 r\nq1 Q0 a 2 2.0 r\nq1 Q0 c 3 1.0 r\nq2 Q0 c 1 1.5 r\n")
    (tmp_path / "collection.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in TEXTS.items()))
    (tmp_path / "queries.tsv").write_text("q1\tred fruit\nq2\ttrees\nq3\tnot in the run\n")
    hits = [{"qid": "q1", "docid": d, "rank": i + 1, "score": 9.0 - i, "content": f"candidate text of {d}"}
            for i, d in enumerate(["a", "c"])]
    (tmp_path / "cands.json").write_text(json.dumps([{"query": "candidate query", "hits": hits}]))
    return tmp_path


def test_files_give_the_whole_run_and_the_texts_of_its_top(files):
    run, queries, docs = load_rerank_inputs(run=files / "run.trec", queries=str(files / "queries.tsv"),
                                            corpus=files / "collection.tsv", depth=1)
    assert run == {"q1": {"b": 3.0, "a": 2.0, "c": 1.0}, "q2": {"c": 1.5}}  # beyond depth 1 stays in
    assert queries == {"q1": "red fruit", "q2": "trees"}  # only the run's queries
    assert docs == {"b": TEXTS["b"], "c": TEXTS["c"]}  # the top 1 of each query only


def test_candidates_give_run_and_texts_unless_files_are_named(files):
    run, queries, docs = load_rerank_inputs(candidates=files / "cands.json", depth=100)
    assert run == {"q1": {"a": 9.0, "c": 8.0}}
    assert queries == {"q1": "candidate query"}
    assert docs == {"a": "candidate text of a", "c": "candidate text of c"}
    # --run wins over the candidates' run, --queries and --corpus over their texts
    run, queries, docs = load_rerank_inputs(run=files / "run.trec", candidates=files / "cands.json",
                                            queries=str(files / "queries.tsv"), corpus=files / "collection.tsv")
    assert run["q1"] == {"b": 3.0, "a": 2.0, "c": 1.0} and queries["q1"] == "red fruit" and docs == TEXTS


def test_dataset_gives_queries_and_documents(files, monkeypatch):
    class Store:
        def get_many(self, ids):
            missing = [i for i in ids if i not in TEXTS]
            if missing:
                raise KeyError(missing[0])
            return {i: TEXTS[i] for i in ids}

    asked = []
    monkeypatch.setattr(inputs, "load_dataset_queries", lambda name: asked.append(name) or {"q1": "x", "q2": "y"})
    monkeypatch.setattr(inputs, "load_dataset_docs", lambda name: asked.append(name) or Store())
    run, queries, docs = load_rerank_inputs(run=files / "run.trec", dataset="dl19", depth=2)
    assert asked == ["dl19", "dl19"] and queries == {"q1": "x", "q2": "y"} and docs == TEXTS
    (files / "run.trec").write_text("q1 Q0 zz 1 1.0 r\n")
    with pytest.raises(UsageError, match="document 'zz' of the run is not in dl19"):
        load_rerank_inputs(run=files / "run.trec", dataset="dl19")


@pytest.mark.parametrize("kwargs, message", [
    (dict(run="run.trec", depth=0), "--depth must be positive, got 0"),
    (dict(queries="queries.tsv", corpus="collection.tsv"),
     "--model needs a first-stage run: --run FILE or --candidates FILE"),
    (dict(run="run.trec", corpus="collection.tsv"),
     "reranking needs query texts: --queries, --candidates or --dataset"),
    (dict(run="run.trec", queries="queries.tsv"),
     "reranking needs document texts: --corpus, --candidates or --dataset"),
])
def test_usage_errors_name_the_flags(files, kwargs, message):
    kwargs = {k: (str(files / v) if isinstance(v, str) else v) for k, v in kwargs.items()}
    with pytest.raises(UsageError, match=message):
        load_rerank_inputs(**kwargs)


def test_texts_missing_for_the_run_name_the_source(files):
    (files / "collection.tsv").write_text("a\tonly a\n")
    with pytest.raises(UsageError, match=r"2 documents of the run have no text in .*collection.tsv \(e.g. b, c\)"):
        load_rerank_inputs(run=files / "run.trec", queries=str(files / "queries.tsv"), corpus=files / "collection.tsv")
    with pytest.raises(UsageError, match=r"1 queries of the run have no text in .*cands.json \(e.g. q2\)"):
        load_rerank_inputs(run=files / "run.trec", candidates=files / "cands.json")

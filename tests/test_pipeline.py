"""The workflows of rerankers.pipeline, called with keyword arguments: evaluate (and rerank), retrieve, demo.

The model runs use a tiny random BERT cross-encoder on the CPU (the ``tiny_cross_encoder`` fixture).
"""
from __future__ import annotations

import json

import pytest

import rerankers.pipeline as pipeline
from rerankers.data.texts import read_candidates
from rerankers.data.trec import ranked, read_qrels, read_run
from rerankers.errors import ModelLoadingError, RerankersError, UsageError
from rerankers.pipeline import evaluate_runs, retrieve_bm25, run_demo, run_names, sample_data_dir

QRELS = "q1 0 a 2\nq1 0 b 1\nq2 0 c 2\n"


@pytest.fixture()
def toy(tmp_path):
    """Two queries, four passages, qrels and two runs (the second ranks the relevant passage first)."""
    (tmp_path / "collection.tsv").write_text("a\tapples are red fruit\nb\tbananas are yellow\n"
                                             "c\tcherries grow on trees\nd\tconcrete is grey\n")
    (tmp_path / "queries.tsv").write_text("q1\tred fruit\nq2\tcherry trees\n")
    (tmp_path / "qrels.txt").write_text(QRELS)
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "run.trec").write_text("q1 Q0 b 1 2.0 r\nq1 Q0 a 2 1.0 r\nq2 Q0 d 1 2.0 r\nq2 Q0 c 2 1.0 r\n")
    (tmp_path / "y" / "run.trec").write_text("q1 Q0 a 1 2.0 r\nq1 Q0 b 2 1.0 r\nq2 Q0 c 1 2.0 r\nq2 Q0 d 2 1.0 r\n")
    return tmp_path


def test_run_names_are_short_and_distinct():
    assert run_names(["runs/bm25.trec", "runs/splade.txt"]) == ["bm25", "splade"]
    assert run_names(["a/BM25/dl19.txt", "a/SPLADE/dl19.txt"]) == ["BM25/dl19", "SPLADE/dl19"]


def test_evaluate_runs_baseline_first_with_significance_and_saved_report(toy):
    runs = [toy / "x" / "run.trec", toy / "y" / "run.trec"]
    report = evaluate_runs(runs, qrels=str(toy / "qrels.txt"), metrics=["MRR@10", "P@1"], test="fisher",
                           save_report=toy / "rep")
    assert [r.name for r in report.rows] == ["x/run", "y/run"]
    assert report.rows[0].result.means["MRR@10"] == 0.5 and report.rows[1].result.means["MRR@10"] == 1.0
    assert set(report.rows[1].p_values) == {"MRR@10", "P@1"} and not report.rows[0].p_values
    saved = json.loads((toy / "rep" / "report.json").read_text())
    assert saved["test"] == "fisher" and [r["name"] for r in saved["runs"]] == ["x/run", "y/run"]
    # --rel-level 1: grade 1 of b counts, so the first run's q1 is found at rank 1
    lenient = evaluate_runs(runs[:1], qrels=str(toy / "qrels.txt"), metrics=["MRR@10"], rel_level=1)
    assert lenient.rows[0].result.means["MRR@10"] == 0.75


def test_a_rel_level_above_every_grade_warns_once(toy, caplog):
    """issue 10: --rel-level 3 on qrels graded 0-2 made MAP/MRR 0 without a word; one warning for the report."""
    import logging
    runs = [toy / "x" / "run.trec", toy / "y" / "run.trec"]
    with caplog.at_level(logging.WARNING):
        report = evaluate_runs(runs, qrels=str(toy / "qrels.txt"), metrics=["MRR@10", "nDCG@10"], rel_level=3)
    warned = [r.getMessage() for r in caplog.records if "above every grade" in r.getMessage()]
    assert warned == [f"relevance level 3 (--rel-level) is above every grade of {toy / 'qrels.txt'} (top grade 2): "
                      "no query has a relevant document, so MRR@10 give 0 for every run"]
    assert report.rows[1].result.means["MRR@10"] == 0.0 and report.rows[1].result.means["nDCG@10"] > 0
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a level that some grade reaches, or only graded metrics: no warning
        evaluate_runs(runs, qrels=str(toy / "qrels.txt"), metrics=["MRR@10"], rel_level=2)
        evaluate_runs(runs, qrels=str(toy / "qrels.txt"), metrics=["nDCG@10"], rel_level=3)
    assert not [r for r in caplog.records if "above every grade" in r.getMessage()]


def test_evaluate_runs_reranks_the_first_run_and_writes_it(toy, monkeypatch):
    calls = []

    def fake_rerank(model, run, queries, docs, **options):
        calls.append((model, run, queries, docs, options))
        return {q: {d: -s for d, s in ds.items()} for q, ds in run.items()}, {"pairs/s": 7.0}

    monkeypatch.setattr(pipeline, "rerank_with_model", fake_rerank)
    output = toy / "out" / "reranked.trec"
    report = evaluate_runs([toy / "x" / "run.trec", toy / "y" / "run.trec"], qrels=str(toy / "qrels.txt"),
                           metrics=["MRR@10"], model="some/model dir", corpus=toy / "collection.tsv",
                           queries=str(toy / "queries.tsv"), depth=1, output=output, batch_tokens=512,
                           test="fisher")
    (model, run, queries, docs, options), = calls
    assert model == "some/model dir" and run == read_run(toy / "x" / "run.trec")
    assert queries == {"q1": "red fruit", "q2": "cherry trees"}
    assert docs == {"b": "bananas are yellow", "d": "concrete is grey"}  # the texts of the top 1 only
    assert options == {"device": None, "dtype": None, "batch_tokens": 512, "depth": 1, "quantize": None,
                       "cuda_graphs": False}
    assert [r.name for r in report.rows] == ["x/run", "x/run >> model dir@1", "y/run"]
    assert report.rows[1].source == str(output) and report.rows[1].extra == {"pairs/s": 7.0}
    assert read_run(output)["q1"] == {"b": -2.0, "a": -1.0}
    assert output.read_text().split("\n")[0].split()[-1] == "model_dir"  # the run tag: one word


@pytest.mark.parametrize("kwargs, message", [
    (dict(runs=["r.trec"]), "give the judgments: --qrels FILE|NAME or --dataset ID"),
    (dict(qrels="q.txt"), "nothing to evaluate: give --run FILE"),
    (dict(runs=["r.trec"], qrels="q.txt", candidates="c.json"), "--candidates gives texts to rerank with"),
    (dict(runs=["r.trec"], qrels="q.txt", max_p=0.0), "--max-p must be a significance level between 0 and 1"),
])
def test_evaluate_runs_usage_errors_name_the_flags(kwargs, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("|", r"\|")):
        evaluate_runs(**kwargs)


def test_retrieve_bm25_writes_and_returns_the_run(toy):
    out = toy / "bm25.trec"
    run = retrieve_bm25(toy / "collection.tsv", str(toy / "queries.tsv"), out, k=2, k1=1.2, b=0.75)
    assert read_run(out) == run and set(run) == {"q1", "q2"} and all(len(d) <= 2 for d in run.values())
    assert next(iter(ranked(run["q1"])))[0] == "a"
    assert out.read_text().split("\n")[0].split()[-1] == "bm25-bm25s"
    with pytest.raises(UsageError, match="--tag 'two words'"):
        retrieve_bm25(toy / "collection.tsv", str(toy / "queries.tsv"), toy / "never.trec", tag="two words")
    assert not (toy / "never.trec").exists()


def test_rerank_eval_with_model_on_dl19_candidates(shared_data, tiny_cross_encoder, tmp_path):
    cands = shared_data / "trec-dl" / "candidates" / "BM25" / "retrieve_results_dl19.json"
    qrels = shared_data / "trec-dl" / "qrels" / "qrels.dl19-passage.txt"
    out = tmp_path / "reranked.trec"
    report = evaluate_runs(model=tiny_cross_encoder, candidates=cands, qrels=str(qrels), depth=10, device="cpu",
                           batch_tokens=4096, output=out)
    printed = report.render("table")
    run = read_run(out)
    _, first_stage, _ = read_candidates(cands)
    assert len(run) == 43 and all(len(docs) == 100 for docs in run.values())
    for qid, docs in run.items():  # the top 10 reranked among themselves, the other 90 below in BM25 order
        bm25_order = [d for d, _ in ranked(first_stage[qid])]
        new_order = [d for d, _ in ranked(docs)]
        assert set(new_order[:10]) == set(bm25_order[:10]) and new_order[10:] == bm25_order[10:]
    rows = [line for line in printed.splitlines() if "retrieve_results_dl19" in line]
    assert len(rows) == 2 and "tiny-bert@10" in rows[1]  # first stage, then reranked
    assert "pairs/s" in printed and "tokens/s" in printed
    # --fuse rrf adds the fused row after the reranked one
    from rerankers.eval.fusion import fuse_runs
    fused = evaluate_runs(model=tiny_cross_encoder, candidates=cands, qrels=str(qrels), depth=10, device="cpu",
                          batch_tokens=4096, fuse="rrf")
    assert [r.name.split(" ")[-1] for r in fused.rows] == ["retrieve_results_dl19", "tiny-bert@10", "(rrf)"]
    direct = fuse_runs(first_stage, run, "rrf")
    assert fused.rows[2].result.means["nDCG@10"] == pytest.approx(
        pipeline.evaluate(direct, read_qrels(qrels), ["nDCG@10"]).means["nDCG@10"])
    with pytest.raises(UsageError, match="--fuse combines"):
        evaluate_runs([str(out)], qrels=str(qrels), fuse="rrf")


def test_rerank_with_an_unknown_model_names_the_flag():
    with pytest.raises(ModelLoadingError, match="--model bert-gigantic: .*unknown backbone 'bert-gigantic'"):
        pipeline.rerank_with_model("bert-gigantic", {"q": {"d": 1.0}}, {"q": "query"}, {"d": "document"},
                                   device="cpu")


def test_demo_reranks_bm25_candidates_with_a_model(tiny_cross_encoder, tmp_path):
    out = tmp_path / "demo"
    report = run_demo(out, k=8, model=tiny_cross_encoder, device="cpu", train=False)
    printed = report.render("table")
    bm25, reranked = read_run(out / "bm25.trec"), read_run(out / "reranked.trec")
    held_out = sorted(bm25)[1::2]  # every other query trains, the rest are evaluated
    assert len(bm25) == 40 and sorted(reranked) == held_out
    assert all(set(bm25[q]) == set(reranked[q]) for q in reranked)  # same candidates, new order
    rows = [line for line in printed.splitlines() if "BM25" in line]
    assert len(rows) == 2 and "tiny-bert" in rows[1] and "pairs/s" in printed
    assert all(len(row.result.qids) == 20 for row in report.rows)


def test_demo_trains_tiny_mamba_and_bert_on_the_bundled_sample(tmp_path):
    if not (sample_data_dir() / "collection.tsv").is_file():
        pytest.skip("bundled sample collection not present")
    out = tmp_path / "demo"
    report = run_demo(out, steps=12)
    rows = report.render("table").splitlines()
    assert [r.split()[0] for r in rows[2:5]] == ["BM25", "BM25", "BM25"] and "tiny Mamba" in rows[3]
    assert "tiny BERT" in rows[4] and "train tokens/s" in rows[0]
    bm25 = rows[2].split()
    assert int(bm25[1]) == 20 and 0.3 < float(bm25[3].rstrip("^v")) <= 1.0
    for kind in ("mamba", "bert"):
        assert (out / f"tiny-{kind}" / "run" / "model" / "reranker_config.json").is_file()
        assert read_run(out / f"reranked-{kind}.trec").keys() == set(sorted(read_run(out / "bm25.trec"))[1::2])
        assert report.rows[1 + (kind == "bert")].extra["train tokens/s"] > 0
    # the two backbones are of about equal size outside their (shared-vocabulary) embeddings
    sizes = [row.extra["params"] for row in report.rows[1:]]
    assert 0.8 < sizes[0] / sizes[1] < 1.25


def test_demo_on_an_incomplete_folder(tmp_path):
    (tmp_path / "queries.tsv").write_text("q1\tquery\n")
    with pytest.raises(RerankersError, match="missing collection.tsv, qrels.txt"):
        run_demo(tmp_path / "out", data_dir=tmp_path)


def test_unwritable_outputs_fail_before_any_work(tmp_path, monkeypatch):
    """An output that cannot be written is named before retrieval or reranking starts (issue 10, defect 2)."""
    from rerankers import pipeline
    from rerankers.errors import UnwritableOutputError

    def no_work(*a, **k):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(pipeline, "bm25_retrieve", no_work)
    monkeypatch.setattr(pipeline, "load_rerank_inputs", no_work)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    data = sample_data_dir()
    with pytest.raises(UnwritableOutputError, match=f"cannot write {blocker}/run.trec"):
        retrieve_bm25(data / "collection.tsv", str(data / "queries.tsv"), blocker / "run.trec")
    qrels = data / "qrels.txt"
    with pytest.raises(UnwritableOutputError, match=f"cannot write {blocker}/report"):
        evaluate_runs([], qrels=str(qrels), model="some-model", candidates=str(tmp_path / "c.json"),
                      save_report=blocker / "report")
    with pytest.raises(UnwritableOutputError, match=f"^cannot write {blocker}: it is a file, expected a directory$"):
        evaluate_runs([], qrels=str(qrels), model="some-model", candidates=str(tmp_path / "c.json"),
                      save_report=blocker)  # --save-report onto an existing file (issue 10, 14)


def test_a_model_with_an_untrained_head_is_marked_in_the_report(tiny_checkpoints, tmp_path, caplog):
    """A backbone folder without a trained head reranks, but loudly: a WARNING and an UNTRAINED column (issue 10)."""
    import logging

    bare = tiny_checkpoints.save_tiny_bert(tmp_path / "bare", "bert", classification=False)
    run = {"q1": {"d1": 2.0, "d2": 1.0}}
    with caplog.at_level(logging.WARNING):
        first, speed = pipeline.rerank_with_model(bare, run, {"q1": "what is a cat"},
                                              {"d1": "a cat is an animal", "d2": "dogs bark"}, device="cpu")
    assert speed["head"] == "UNTRAINED"
    assert any("scoring head is not trained" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    # two builds agree: the fresh head is seeded
    second, again = pipeline.rerank_with_model(bare, run, {"q1": "what is a cat"},
                                               {"d1": "a cat is an animal", "d2": "dogs bark"}, device="cpu")
    assert again["head"] == "UNTRAINED" and second == first

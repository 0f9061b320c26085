"""The `rerank` command line: eval / retrieve / demo flags reach the pipeline, what it prints, and
one-line errors (exit 2, no traceback). The workflows themselves: tests/test_pipeline.py."""
from __future__ import annotations

import importlib.util
import json

import pytest

import rerankers.pipeline as pipeline
from rerankers.cli import main
from rerankers.data.trec import read_run

CORPUS = {
    "d1": "Ankara is the capital city of Turkey and the seat of its parliament.",
    "d2": "Istanbul is the largest city of Turkey but not its capital.",
    "d3": "The turkey is a large bird native to North America, often roasted.",
    "d4": "Fleas are small wingless insects that feed on the blood of mammals.",
    "d5": "A flea can live for up to a year when it has a host and warmth.",
    "d6": "Concrete cures over weeks while cement hydration continues.",
}
QUERIES = {"q1": "capital of turkey", "q2": "how long does a flea live"}
QRELS = "q1 0 d1 3\nq1 0 d2 1\nq1 0 d3 0\nq2 0 d5 3\nq2 0 d4 2\n"


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "collection.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in CORPUS.items()))
    (tmp_path / "queries.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in QUERIES.items()))
    (tmp_path / "qrels.txt").write_text(QRELS)
    (tmp_path / "run.trec").write_text("q1 Q0 d2 1 3.0 r\nq1 Q0 d1 2 2.0 r\nq2 Q0 d4 1 5.0 r\nq2 Q0 d5 2 4.0 r\n")
    return tmp_path


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("rerank: error: ") and "Traceback" not in err
    return lines[-1]


def test_eval_table(files, capsys):
    assert main(["eval", "--run", str(files / "run.trec"), "--qrels", str(files / "qrels.txt"),
                 "--metrics", "MRR@10", "nDCG@10,P@1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["run", "queries", "MRR@10", "nDCG@10", "P@1"]
    # q1: d2 (grade 1) then d1 (3): at the default level 2 the first relevant is at rank 2; q2: rank 1
    assert out[2].split()[:3] == ["run", "2", "0.7500"] and out[2].split()[4] == "0.5000"
    assert "grade >= 2" in out[3]
    assert main(["-q", "eval", "--run", str(files / "run.trec"), "--qrels", str(files / "qrels.txt"),
                 "--metrics", "MRR@10", "--rel-level", "1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["means"]["MRR@10"] == 1.0


def test_retrieve_then_eval(files, capsys, tmp_path):
    out = tmp_path / "out" / "bm25.trec"
    assert main(["retrieve", "--corpus", str(files / "collection.tsv"), "--queries", str(files / "queries.tsv"),
                 "--output", str(out), "--k", "3"]) == 0
    run = read_run(out)
    assert set(run) == {"q1", "q2"} and all(len(d) <= 3 for d in run.values())
    assert max(run["q2"], key=run["q2"].get) in {"d4", "d5"}
    assert "d6" not in run["q1"]  # no term in common: not retrieved
    assert main(["eval", "--run", str(out), str(files / "run.trec"), "--qrels", str(files / "qrels.txt"),
                 "--test", "fisher", "--save-report", str(tmp_path / "rep")]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["bm25", "run"] and report["test"] == "fisher"
    assert set(report["runs"][1]["p_values"]) == set(report["metrics"])


def test_rerank_path_calls_the_model_hook(files, capsys, monkeypatch, tmp_path):
    """--model: inputs resolved from --corpus/--queries, one call of rerank_with_model, reranked row second."""
    calls = []

    def fake_rerank(model, run, queries, docs, **options):
        calls.append((run, queries, docs))
        assert model == "tiny" and options["depth"] == 2 and options["device"] is None
        # a perfect "model": score by the judged grade
        grades = {"d1": 3, "d5": 3, "d4": 2, "d2": 1}
        return {q: {d: float(grades.get(d, 0)) for d in ds} for q, ds in run.items()}, {"pairs/s": 123.0}

    monkeypatch.setattr(pipeline, "rerank_with_model", fake_rerank)
    output = tmp_path / "reranked.trec"
    assert main(["eval", "--run", str(files / "run.trec"), "--qrels", str(files / "qrels.txt"), "--model", "tiny",
                 "--corpus", str(files / "collection.tsv"), "--queries", str(files / "queries.tsv"),
                 "--depth", "2", "--output", str(output), "--metrics", "MRR@10"]) == 0
    (run, queries, docs), = calls
    assert run == {"q1": {"d2": 3.0, "d1": 2.0}, "q2": {"d4": 5.0, "d5": 4.0}}
    assert queries == QUERIES and docs == {d: CORPUS[d] for d in ("d1", "d2", "d4", "d5")}
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[-1] == "pairs/s"
    assert out[3].startswith("run >> tiny@2") and "1.0000" in out[3] and "123.0" in out[3]
    assert read_run(output)["q1"] == {"d1": 3.0, "d2": 1.0}


def test_rerank_inputs_from_candidates(tmp_path, capsys, monkeypatch):
    cands = [{"query": QUERIES["q1"], "hits": [{"qid": "q1", "docid": d, "rank": i + 1, "score": 5.0 - i,
                                                 "content": CORPUS[d]} for i, d in enumerate(["d2", "d1"])]}]
    (tmp_path / "c.json").write_text(json.dumps(cands))
    (tmp_path / "qrels.txt").write_text(QRELS)
    seen = {}
    monkeypatch.setattr(pipeline, "rerank_with_model",
                        lambda model, run, q, d, **_: (seen.update(q=q, d=d) or {"q1": {"d1": 2.0, "d2": 1.0}}, None))
    assert main(["eval", "--candidates", str(tmp_path / "c.json"), "--qrels", str(tmp_path / "qrels.txt"),
                 "--model", "m", "--metrics", "MRR@10"]) == 0
    assert seen == {"q": {"q1": QUERIES["q1"]}, "d": {"d1": CORPUS["d1"], "d2": CORPUS["d2"]}}
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[:3] == ["c", "1", "0.5000"] and out[3].split()[-1] == "1.0000"


# ----------------------------------------------------------------------------------- bad input
def test_malformed_run_line(files, capsys):
    bad = files / "bad.trec"
    bad.write_text("q1 Q0 d1 1 2.0 r\nq1 Q0 d2 2 r\n")
    msg = _error(capsys, ["eval", "--run", str(bad), "--qrels", str(files / "qrels.txt")])
    assert f"{bad}, line 2: expected 6 columns" in msg


def test_non_integer_grade(files, capsys):
    (files / "qrels.txt").write_text("q1 0 d1 3\nq1 0 d2 high\n")
    msg = _error(capsys, ["eval", "--run", str(files / "run.trec"), "--qrels", str(files / "qrels.txt")])
    assert f"{files / 'qrels.txt'}, line 2: relevance grade 'high' is not an integer" in msg


def test_unknown_dataset(files, capsys):
    msg = _error(capsys, ["eval", "--run", str(files / "run.trec"), "--qrels", "dl33"])
    assert "unknown dataset 'dl33'" in msg and "dl19" in msg and "msmarco-dev" in msg


def test_run_qids_missing_from_qrels(files, capsys):
    (files / "qrels.txt").write_text("x1 0 d1 1\n")
    msg = _error(capsys, ["eval", "--run", str(files / "run.trec"), "--qrels", str(files / "qrels.txt")])
    assert str(files / "run.trec") in msg and str(files / "qrels.txt") in msg and "none of the 2 queries" in msg


def test_some_queries_unjudged_warns(files, capsys):
    (files / "qrels.txt").write_text("q1 0 d1 1\n")
    assert main(["eval", "--run", str(files / "run.trec"), "--qrels", str(files / "qrels.txt")]) == 0
    err = capsys.readouterr().err
    assert "1 of 2 queries have no judgments" in err and "as trec_eval does" in err


def test_empty_file(files, capsys):
    (files / "empty.trec").write_text("")
    msg = _error(capsys, ["eval", "--run", str(files / "empty.trec"), "--qrels", str(files / "qrels.txt")])
    assert msg == f"rerank: error: {files / 'empty.trec'}: file is empty"


def test_candidates_missing_field(files, capsys):
    (files / "c.json").write_text(json.dumps([{"query": "q", "hits": [{"qid": "q1", "docid": "d1"}]}]))
    msg = _error(capsys, ["eval", "--candidates", str(files / "c.json"), "--qrels", str(files / "qrels.txt")])
    assert f"{files / 'c.json'}: entry 0: hit 0: missing field 'content'" in msg


def test_unknown_metric_and_usage(files, capsys):
    msg = _error(capsys, ["eval", "--run", str(files / "run.trec"), "--qrels", str(files / "qrels.txt"),
                          "--metrics", "nDCG@ten"])
    assert "unknown metric 'nDCG@ten'" in msg
    assert "--qrels" in _error(capsys, ["eval", "--run", str(files / "run.trec")])
    assert "--max-p must be" in _error(capsys, ["eval", "--run", str(files / "run.trec"), "--qrels",
                                               str(files / "qrels.txt"), "--max-p", "5"])
    msg = _error(capsys, ["eval", "--run", str(files / "run.trec"), "--qrels", str(files / "qrels.txt"),
                          "--model", "m"])
    assert "query texts" in msg
    msg = _error(capsys, ["eval", "--run", str(files / "run.trec"), "--qrels", str(files / "qrels.txt"),
                          "--corpus", str(files / "collection.tsv")])  # texts without a model: not ignored
    assert "--corpus gives texts to rerank with; it needs --model" in msg


def test_missing_texts_for_rerank(files, capsys):
    (files / "collection.tsv").write_text("d1\tonly one passage\n")
    msg = _error(capsys, ["eval", "--run", str(files / "run.trec"), "--qrels", str(files / "qrels.txt"),
                          "--model", "m", "--queries", str(files / "queries.tsv"),
                          "--corpus", str(files / "collection.tsv")])
    assert "3 documents of the run have no text in" in msg


def test_pyserini_backend_names_the_extra(files, capsys):
    if importlib.util.find_spec("pyserini") is not None:
        pytest.skip("pyserini (an optional extra) is installed: the missing-extra message does not apply")
    msg = _error(capsys, ["retrieve", "--corpus", str(files / "collection.tsv"), "--queries",
                          str(files / "queries.tsv"), "--output", str(files / "o.trec"), "--backend", "pyserini"])
    assert "pip install -e '.[pyserini]' in the rerankers project folder" in msg  # not PyPI's 'rerankers'


def test_retrieve_bad_tag(files, capsys):
    msg = _error(capsys, ["retrieve", "--corpus", str(files / "collection.tsv"), "--queries",
                          str(files / "queries.tsv"), "--output", str(files / "o.trec"), "--tag", "my run"])
    assert "--tag 'my run'" in msg and not (files / "o.trec").exists()


# ----------------------------------------------------------------------------------------- demo
def test_demo_on_a_given_folder(files, capsys, tmp_path):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--data", str(files), "--no-train"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["run", "queries", "MRR@10"] and out[2].split()[:2] == ["BM25", "1"]
    assert {"bm25.trec", "report.json", "report.md"} <= {p.name for p in (tmp_path / "demo").iterdir()}


def test_demo_with_a_missing_model_is_one_line_error(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path / "demo"), "--k", "5", "--model", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("rerank: error:")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err
    assert "unknown backbone" in errors[0] and "nope" in errors[0]


def test_rerank_eval_with_unknown_model_is_one_line_error(shared_data, tmp_path, capsys):
    cands = shared_data / "trec-dl" / "candidates" / "BM25" / "retrieve_results_dl19.json"
    qrels = shared_data / "trec-dl" / "qrels" / "qrels.dl19-passage.txt"
    rc = main(["eval", "--model", "bert-gigantic", "--candidates", str(cands), "--qrels", str(qrels),
               "--depth", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown backbone 'bert-gigantic'" in err and "minilm-l6" in err


def test_unwritable_output(files, capsys):
    blocker = files / "not_a_folder"
    blocker.write_text("x")
    msg = _error(capsys, ["retrieve", "--corpus", str(files / "collection.tsv"), "--queries",
                          str(files / "queries.tsv"), "--output", str(blocker / "run.trec")])
    assert str(blocker) in msg


@pytest.mark.parametrize("extra, message", [
    (["--output", "x.trec"], "--output writes the reranked run: it needs --model"),
    (["--model", "m", "--candidates", "c.json", "--batch-tokens", "0"], "--batch-tokens must be a positive number"),
    (["--model", "m", "--candidates", "c.json", "--batch-tokens", "-5"], "--batch-tokens must be a positive number"),
])
def test_options_are_never_silently_ignored(files, capsys, extra, message):
    """issue 10, defect 9: an option that cannot apply is a usage error, not a silent no-op."""
    msg = _error(capsys, ["eval", "--run", str(files / "run.trec"), "--qrels", str(files / "qrels.txt"), *extra])
    assert message in msg


def test_export_command(tiny_cross_encoder, tmp_path, capsys):
    assert main(["export", "--model", str(tiny_cross_encoder), "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "config.json").is_file() and "hf" in capsys.readouterr().out
    from transformers import AutoConfig
    assert AutoConfig.from_pretrained(str(tmp_path / "hf")).architectures == ["BertForSequenceClassification"]


@pytest.fixture()
def restored_logging(monkeypatch):
    """_setup_logging, with the variables it writes restored afterwards and logging set back to the defaults."""
    import logging

    from transformers.utils import logging as transformers_logging

    from rerankers.cli import _setup_logging
    for name in ("TRANSFORMERS_VERBOSITY", "HF_HUB_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    logging.captureWarnings(False)  # so that _setup_logging routes warnings now, over pytest's recorder
    yield _setup_logging
    _setup_logging(False, False)
    logging.captureWarnings(False)
    monkeypatch.undo()
    transformers_logging.enable_progress_bar()


def test_quiet_hides_the_libraries_info_and_warnings(restored_logging, capsys):
    """issue 10: under -q no ir_datasets INFO/WARNING line (it sets its logger to INFO on first use), no
    transformers warning or progress bar, no Python warning; errors still show."""
    import logging
    import warnings

    import ir_datasets
    from transformers.utils import logging as transformers_logging
    irds = ir_datasets.log.easy()
    restored_logging(False, True)
    irds.info("irds info")
    irds.warn("irds warning")
    irds.error("irds error")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library's warning")
    err = capsys.readouterr().err
    assert "irds error" in err and "irds info" not in err and "irds warning" not in err
    assert "a library's warning" not in err
    assert not transformers_logging.get_logger("transformers.tokenization_utils_base").isEnabledFor(logging.WARNING)
    assert not transformers_logging.is_progress_bar_enabled()
    restored_logging(False, False)  # without -q: their warnings, not their INFO
    irds.info("irds info")
    irds.warn("irds warning")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library's warning")
    err = capsys.readouterr().err
    assert "irds warning" in err and "irds info" not in err and "a library's warning" in err
    assert transformers_logging.get_logger("transformers.tokenization_utils_base").isEnabledFor(logging.WARNING)


def test_an_unexpected_error_of_several_lines_is_one_line(monkeypatch, capsys):
    """A library's (or our) unexpected exception: one line, exit 1, the traceback only with -v."""
    import rerankers.cli as cli

    def boom(args):
        raise RuntimeError("first line\n  second line")
    help_text, add_args, _ = cli.COMMANDS["export"]
    monkeypatch.setitem(cli.COMMANDS, "export", (help_text, add_args, boom))
    assert main(["export", "--model", "m", "--out", "o"]) == 1
    assert capsys.readouterr().err == ("rerank: error: unexpected RuntimeError: first line second line (rerun with -v "
                                       "for the traceback)\n")
    with pytest.raises(RuntimeError):
        main(["-v", "export", "--model", "m", "--out", "o"])


def test_a_model_folder_without_tokenizer_files_is_a_one_line_error(tiny_checkpoints, files, tmp_path, capsys):
    """transformers would build a tokenizer of special tokens only (every word [UNK]) and score nonsense."""
    folder = tiny_checkpoints.save_tiny_bert(tmp_path / "no-tokenizer", "bert")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    msg = _error(capsys, ["eval", "--model", str(folder), "--run", str(files / "run.trec"), "--corpus",
                          str(files / "collection.tsv"), "--queries", str(files / "queries.tsv"), "--qrels",
                          str(files / "qrels.txt"), "--device", "cpu"])
    assert f"{folder}: no tokenizer files (tokenizer.json, vocab.txt, ...)" in msg


def test_version(capsys):
    from rerankers import __version__
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"rerank (rerankers) {__version__}\n"


# ------------------------------------------------------------------- efficient rerankers (issue 15)
def _rerank_flags(files, model) -> list[str]:
    return ["eval", "--model", str(model), "--run", str(files / "run.trec"), "--corpus", str(files / "collection.tsv"),
            "--queries", str(files / "queries.tsv"), "--qrels", str(files / "qrels.txt"), "--device", "cpu",
            "--metrics", "MRR@10"]


def test_eval_quantize_int8_reports_the_size(tiny_cross_encoder, files, capsys):
    assert main([*_rerank_flags(files, tiny_cross_encoder), "--quantize", "int8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[-1] == "quantize" and "int8" in out[3] and "MiB" in out[3]
    assert "int4" in _error(capsys, [*_rerank_flags(files, tiny_cross_encoder), "--quantize", "int4"])
    msg = _error(capsys, ["eval", "--run", str(files / "run.trec"), "--qrels", str(files / "qrels.txt"),
                          "--quantize", "int8"])
    assert "--quantize applies to the reranking model: it needs --model" in msg


def test_prune_command(tiny_cross_encoder, files, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_cross_encoder), "--out", str(out), "--layers-keep", "1",
                 "--heads-per-layer", "2"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{out}: ") and "parameters" in line and "heads/layer 2" in line
    assert main(_rerank_flags(files, out)) == 0 and "pruned@" in capsys.readouterr().out
    assert "keep 1 to 4" in _error(capsys, ["prune", "--model", str(tiny_cross_encoder), "--out",
                                            str(tmp_path / "x"), "--heads-per-layer", "9"])
    assert "nothing to prune" in _error(capsys, ["prune", "--model", str(tiny_cross_encoder), "--out",
                                                 str(tmp_path / "x")])


def test_teacher_command(tiny_cross_encoder, files, tmp_path, capsys):
    out = tmp_path / "teacher.trec"
    assert main(["teacher", "--model", str(tiny_cross_encoder), "--run", str(files / "run.trec"), "--queries",
                 str(files / "queries.tsv"), "--corpus", str(files / "collection.tsv"), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out == f"{out}: 2 queries, 4 pairs\n"
    run = read_run(out)
    assert {q: set(d) for q, d in run.items()} == {"q1": {"d1", "d2"}, "q2": {"d4", "d5"}}
    assert "give the candidates" in _error(capsys, ["teacher", "--model", str(tiny_cross_encoder), "--out",
                                                    str(out)])


def test_train_recompute_mixer_flag_forms():
    """--recompute-mixer alone asks for it (on), with a value picks auto / on / off; left out, the config file's value
    or the default (auto) stands."""
    from rerankers.cli import build_parser
    base = ["train", "--backbone", "mamba-130m", "--out", "runs/x", "--train", "a.json"]
    parse = build_parser().parse_args
    assert parse([*base, "--recompute-mixer"]).recompute_mixer == "on"
    assert parse([*base, "--recompute-mixer", "off"]).recompute_mixer == "off"
    assert not hasattr(parse(base), "recompute_mixer")
    with pytest.raises(SystemExit):
        parse([*base, "--recompute-mixer", "sometimes"])

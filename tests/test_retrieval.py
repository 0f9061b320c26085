"""BM25 retrieval (rerankers.retrieval): Lucene's matching rule and parameter checks (issue 10, defects 4-5)."""
import pytest

from rerankers.cli import main
from rerankers.errors import RetrievalError
from rerankers.retrieval import BM25Config, bm25_retrieve

CORPUS = {"stop": "the of and", "bang": "!!!", "cat": "cats purr loudly at night", "letter": "x",
          "dog": "dogs bark at night"}


def test_a_document_matches_only_through_a_query_term_it_contains():
    run = bm25_retrieve(CORPUS, {"unrelated": "berlin population", "cats": "cats", "stop": "the and",
                                 "night": "night"}, k=10)
    assert run["unrelated"] == {} and run["stop"] == {}  # no indexable term in common: nothing retrieved
    assert set(run["cats"]) == {"cat"}
    assert set(run["night"]) == {"cat", "dog"}
    assert all(s > 0 for docs in run.values() for s in docs.values())


def test_a_one_letter_corpus_is_not_returned_for_every_query():
    run = bm25_retrieve({"a": "x", "b": "y"}, {"q1": "cats", "q2": "dogs"}, k=5)
    assert run == {"q1": {}, "q2": {}}


@pytest.mark.parametrize("kw, flag", [({"k1": -1.0}, "--k1"), ({"b": 7.0}, "--b"), ({"b": -0.1}, "--b"),
                                      ({"k1": float("nan")}, "--k1")])
def test_invalid_parameters_are_refused(kw, flag):
    with pytest.raises(RetrievalError, match=flag):
        BM25Config(**kw)


def test_invalid_parameters_are_a_one_line_usage_error(tmp_path, capsys):
    (tmp_path / "c.tsv").write_text("d1\tcats purr\n")
    (tmp_path / "q.tsv").write_text("q1\tcats\n")
    rc = main(["retrieve", "--corpus", str(tmp_path / "c.tsv"), "--queries", str(tmp_path / "q.tsv"),
               "--output", str(tmp_path / "o.trec"), "--k1", "-1"])
    err = capsys.readouterr().err
    assert rc == 2 and "rerank: error: --k1 must be >= 0, got -1.0" in err and not (tmp_path / "o.trec").exists()


@pytest.mark.parametrize("quiet", [False, True], ids=["terminal", "quiet"])
def test_a_large_corpus_shows_bm25s_progress_on_a_terminal_unless_quiet(monkeypatch, terminal_stderr, quiet):
    import logging

    import rerankers.retrieval as retrieval
    monkeypatch.setattr(retrieval, "LARGE_CORPUS", 2)  # this corpus counts as large
    terminal = terminal_stderr()
    pkg = logging.getLogger("rerankers")
    before = pkg.level
    pkg.setLevel(logging.ERROR if quiet else logging.INFO)
    try:
        run = bm25_retrieve({"d1": "red apples", "d2": "green pears", "d3": "blue sky"}, {"q": "apples"}, k=2)
    finally:
        pkg.setLevel(before)
    assert list(run["q"]) == ["d1"]
    assert ("BM25S Retrieve" in terminal.text) == (not quiet)  # bm25s clears its bars when done (leave=False)

"""TREC run and qrels files: round trips, trec_eval's conventions, and errors naming file and line."""
import gzip

import pytest

from rerankers.data.trec import ranked, read_qrels, read_run, truncate_run, write_qrels, write_run
from rerankers.errors import DataFormatError


def test_write_run_sorts_breaks_ties_and_round_trips(tmp_path):
    run = {"q2": {"a": 1.0, "c": 2.0, "b": 2.0}, "q1": {"x": 0.1 + 0.2, "y": -3.5}}
    path = tmp_path / "out" / "run.trec"
    write_run(run, path, tag="test")
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["q1", "Q0", "x", "1", repr(0.1 + 0.2), "test"]
    # q2: score descending, the tie 2.0 broken by docid descending (trec_eval's order)
    assert [ln.split()[2:4] for ln in lines[2:]] == [["c", "1"], ["b", "2"], ["a", "3"]]
    assert read_run(path) == run  # exact floats back
    assert {ln.split()[5] for ln in lines} == {"test"}
    write_run(run, path, depth=1)
    assert read_run(path) == {"q1": {"x": 0.1 + 0.2}, "q2": {"c": 2.0}}
    assert truncate_run(run, 2)["q2"] == {"c": 2.0, "b": 2.0}
    assert ranked({"a": 1.0, "b": 1.0}) == [("b", 1.0), ("a", 1.0)]
    with pytest.raises(ValueError):
        write_run(run, path, tag="two words")
    for bad in ({"q1": {"doc 1": 1.0}}, {"q 1": {"d": 1.0}}, {"q1": {"": 1.0}}):
        with pytest.raises(DataFormatError, match="without whitespace"):
            write_run(bad, path)  # "doc 1" would read back as docid "doc", score 1 (the rank)
    assert read_run(path) == {"q1": {"x": 0.1 + 0.2}, "q2": {"c": 2.0}}  # the old file is kept


def test_read_run_formats(tmp_path):
    trec = tmp_path / "run.txt"
    trec.write_text("1 Q0 d1 1 2.5 tag extra junk\n\n1 Q0 d2 2 1.5 tag\n")  # trec_eval ignores the junk
    assert read_run(trec) == {"1": {"d1": 2.5, "d2": 1.5}}
    msmarco = tmp_path / "run.tsv"
    msmarco.write_text("1\td1\t1\n1\td2\t2\n")
    assert ranked(read_run(msmarco)["1"])[0][0] == "d1"
    gz = tmp_path / "run.txt.gz"
    with gzip.open(gz, "wt") as f:
        f.write("1 Q0 d1 1 2.5 t\n")
    assert read_run(gz) == {"1": {"d1": 2.5}}


@pytest.mark.parametrize("content, line, words", [
    ("1 Q0 d1 1 2.5 t\n1 Q0 d2 2 t\n", 2, "expected 6 columns"),
    ("1 Q0 d1 1 2.5 t\n\n1 Q0 d2 2 high t\n", 3, "score 'high' is not a number"),
    ("1 Q0 d1 1 2.5 t\n1 Q0 d1 2 1.5 t\n", 2, "appears twice"),
    ("1 Q0 d1 one 2.5 t\n", 1, "rank 'one' is not an integer"),
    ("1 Q0 d1 1 nan t\n", 1, "not a finite number"),
    ("1 Q0 d1 1 2.5 t\n1 d2 2\n", 2, "columns where earlier lines have 6"),
])
def test_malformed_run_names_file_and_line(tmp_path, content, line, words):
    path = tmp_path / "bad.trec"
    path.write_text(content)
    with pytest.raises(DataFormatError) as e:
        read_run(path)
    assert str(e.value).startswith(f"{path}, line {line}: ") and words in str(e.value)
    assert e.value.path == str(path) and e.value.line == line


@pytest.mark.parametrize("content, words", [("", "file is empty"), ("\n  \n", "only blank lines")])
def test_empty_files(tmp_path, content, words):
    path = tmp_path / "empty.txt"
    path.write_text(content)
    for reader in (read_run, read_qrels):
        with pytest.raises(DataFormatError, match=words) as e:
            reader(path)
        assert str(path) in str(e.value)
    with pytest.raises(DataFormatError, match="no such file"):
        read_run(tmp_path / "absent.trec")


def test_qrels_graded_and_errors(tmp_path):
    good = tmp_path / "qrels.txt"
    good.write_text("1 0 d1 3\n1 0 d2 0\n2 0 d3 -1\n2 0 d3 -1\n")  # exact repeats are harmless
    assert read_qrels(good) == {"1": {"d1": 3, "d2": 0}, "2": {"d3": -1}}
    write_qrels(read_qrels(good), tmp_path / "copy.txt")
    assert read_qrels(tmp_path / "copy.txt") == read_qrels(good)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 0 d1 3\n1 0 d2 1.5\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt, line 2: relevance grade '1\.5' is not an integer"):
        read_qrels(bad)
    bad.write_text("1 0 d1 3\n1 0 d1 2\n")
    with pytest.raises(DataFormatError, match=r"line 2: .*judged twice with different grades"):
        read_qrels(bad)
    bad.write_text("1 0 d1\n")
    with pytest.raises(DataFormatError, match="line 1: expected 4 columns"):
        read_qrels(bad)


def test_real_trec_dl_files(shared_data):
    dl = shared_data / "trec-dl"
    run = read_run(dl / "candidates" / "BM25" / "trec_results_dl19.txt")
    qrels = read_qrels(dl / "qrels" / "qrels.dl19-passage.txt")
    assert len(run) == 43 and all(len(d) == 100 for d in run.values())
    assert len(qrels) == 43 and sum(map(len, qrels.values())) == 9260
    assert {g for d in qrels.values() for g in d.values()} == {0, 1, 2, 3}


def test_bom_crlf_and_lone_cr(tmp_path):
    """A UTF-8 BOM is not part of the first qid; CRLF endings are stripped; a lone CR is not a line break."""
    run = tmp_path / "bom.trec"
    run.write_bytes(b"\xef\xbb\xbf1 Q0 d1 1 2.5 t\r\n1 Q0 d2 2 1.5 t\r\n\r\n")
    assert read_run(run) == {"1": {"d1": 2.5, "d2": 1.5}}
    qrels = tmp_path / "bom.qrels"
    qrels.write_bytes(b"\xef\xbb\xbf1 0 d1 2\r\n")
    assert read_qrels(qrels) == {"1": {"d1": 2}}
    from rerankers.data.texts import read_corpus

    corpus = tmp_path / "collection.tsv"
    corpus.write_bytes(b"p1\tone\rtwo\np2\tthree\r\n")
    assert read_corpus(corpus) == {"p1": "one\rtwo", "p2": "three"}


def test_invalid_utf8_names_its_own_line(tmp_path):
    """Decoding is per line, so the error names the bad line even deep inside a large file."""
    lines = [f"1 Q0 d{i} {i + 1} 1.0 t\n".encode() for i in range(5000)]
    lines[3000] = b"1 Q0 d\xff 3001 1.0 t\n"
    path = tmp_path / "bad.trec"
    path.write_bytes(b"".join(lines))
    with pytest.raises(DataFormatError, match=r"bad\.trec, line 3001: not valid UTF-8"):
        read_run(path)


def test_qrels_comment_lines_are_skipped_as_trec_eval_does(shared_data):
    """trec_eval's own qrels.test.with-comments: '#' lines are comments, a '#' inside a docno is text."""
    from rerankers.data.trec import read_qrels

    path = shared_data / "trec_eval" / "test" / "qrels.test.with-comments"
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    judged = [f for f in lines if not f[0].startswith("#")]
    qrels = read_qrels(path)
    assert sum(map(len, qrels.values())) == len({(f[0], f[2]) for f in judged})
    assert qrels["301"]["CR#93E-1860"] == 0

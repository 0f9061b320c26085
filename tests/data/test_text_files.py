"""Queries, corpora and candidates with texts: formats and errors naming file and line/entry."""
import gzip
import json

import pytest

from rerankers.data.texts import read_candidates, read_corpus, read_queries
from rerankers.errors import DataFormatError


def test_queries_tsv_and_jsonl(tmp_path):
    tsv = tmp_path / "queries.tsv"
    tsv.write_text("1\twhat is a flea\n2\tcapital of turkey \n")
    assert read_queries(tsv) == {"1": "what is a flea", "2": "capital of turkey"}
    jsonl = tmp_path / "queries.jsonl"
    jsonl.write_text('{"_id": 7, "text": "a"}\n{"qid": "8", "query": "b"}\n')
    assert read_queries(jsonl) == {"7": "a", "8": "b"}


@pytest.mark.parametrize("content, line, words", [
    ("1\tok\n2 no tab here\n", 2, "found no tab"),
    ("1\tok\n2\t  \n", 2, "query '2' has an empty text"),
    ("1\tok\n1\tagain\n", 2, "query id '1' appears twice"),
])
def test_bad_queries(tmp_path, content, line, words):
    path = tmp_path / "q.tsv"
    path.write_text(content)
    with pytest.raises(DataFormatError) as e:
        read_queries(path)
    assert str(e.value).startswith(f"{path}, line {line}:") and words in str(e.value)


def test_corpus_formats(tmp_path):
    tsv = tmp_path / "collection.tsv"
    tsv.write_text("0\tfirst passage\n1\tsecond\tpassage with a tab\n")
    assert read_corpus(tsv) == {"0": "first passage", "1": "second\tpassage with a tab"}
    assert read_corpus(tsv, ids={"1"}) == {"1": "second\tpassage with a tab"}
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text('{"id": "a", "contents": "pyserini style"}\n{"_id": "b", "title": "T", "text": "beir"}\n')
    assert read_corpus(jsonl) == {"a": "pyserini style", "b": "T beir"}
    jsonl.write_text('{"id": "a", "contents": "x"}\n{"id": "b"}\n')
    with pytest.raises(DataFormatError, match=r"line 2: missing document text field"):
        read_corpus(jsonl)
    jsonl.write_text('{"id": "a", "contents": "x"}\n{"id": "b", \n')
    with pytest.raises(DataFormatError, match=r"line 2: invalid JSON"):
        read_corpus(jsonl)
    tsv.write_text("0\tfine\n1\t\n")
    with pytest.raises(DataFormatError, match=r"line 2: document '1' has an empty text"):
        read_corpus(tsv)


@pytest.mark.parametrize("reader, line, words", [
    (read_corpus, '{"id": "b", "text": ["two", "parts"]}',
     "document text field 'text' must be a string, found a list: ['two', 'parts']"),
    (read_corpus, '{"id": "b", "text": "x", "title": {"t": 1}}', "document field 'title' must be a string, found an "
                                                                 "object: {'t': 1}"),
    (read_corpus, '{"id": ["b"], "text": "x"}', "document id field 'id' must be a string or an integer, found a "
                                                "list: ['b']"),
    (read_queries, '{"qid": "2", "text": []}', "query text field 'text' must be a string, found a list: []"),
    (read_queries, '{"qid": 2.5, "text": "x"}', "query id field 'qid' must be a string or an integer, found a "
                                                "number: 2.5"),
])
def test_a_jsonl_field_of_the_wrong_type_is_named_with_its_line(tmp_path, reader, line, words):
    """issue 10: a list-valued text was reported as empty (candidates) or read as its repr (corpus, queries)."""
    path = tmp_path / "texts.jsonl"
    path.write_text('{"id": "a", "qid": "1", "text": "fine"}\n' + line + "\n")
    with pytest.raises(DataFormatError) as e:
        reader(path)
    assert str(e.value) == f"{path}, line 2: {words}"


def _entry(qid, docs, query="q text"):
    return {"query": query, "hits": [{"qid": qid, "docid": d, "rank": i + 1, "score": 10.0 - i, "content": f"text {d}"}
                                     for i, d in enumerate(docs)]}


def test_candidates_json_and_jsonl(tmp_path):
    entries = [_entry(1, ["a", "b"]), _entry("2", ["b", "c"], "other")]
    js = tmp_path / "cands.json"
    js.write_text(json.dumps(entries, indent=2))
    queries, run, docs = read_candidates(js)
    assert queries == {"1": "q text", "2": "other"}
    assert run == {"1": {"a": 10.0, "b": 9.0}, "2": {"b": 10.0, "c": 9.0}}
    assert docs == {"a": "text a", "b": "text b", "c": "text c"}
    jl = tmp_path / "cands.jsonl"
    jl.write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert read_candidates(jl) == (queries, run, docs)


@pytest.mark.parametrize("mutate, words", [
    (lambda e: e[1]["hits"][1].pop("docid"), "entry 1: hit 1: missing field 'docid'"),
    (lambda e: e[0]["hits"][0].pop("content"), "entry 0: hit 0: missing field 'content'"),
    (lambda e: e[0].pop("query"), "entry 0: missing field 'query'"),
    (lambda e: e[0]["hits"][1].update(qid=5), "entry 0: hit 1: qid '5' differs"),
    (lambda e: e[0]["hits"][1].update(score="x"), "entry 0: hit 1: score 'x' is not a number"),
    (lambda e: e[0]["hits"][1].update(score=float("nan")), "entry 0: hit 1: score nan is not a finite number"),
    (lambda e: e[1]["hits"][0].pop("score") and e[1]["hits"][0].update(rank="first"),
     "entry 1: hit 0: rank 'first' is not a number"),
    (lambda e: e[1]["hits"][0].update(qid=1) or e[1]["hits"][1].update(qid=1), "entry 1: query '1' appears in two"),
    # a text or id of the wrong type is named as such, never read as empty nor as its repr (issue 10)
    (lambda e: e[0]["hits"][1].update(content=["a", "b"]),
     "entry 0: hit 1: document 'b': 'content' must be a string, found a list: ['a', 'b']"),
    (lambda e: e[1]["hits"][0].update(content=7), "entry 1: hit 0: document 'b': 'content' must be a string, "
                                                  "found a number: 7"),
    (lambda e: e[0].update(query=["q"]), "entry 0: 'query' must be a string, found a list: ['q']"),
    (lambda e: e[1]["hits"][1].update(docid=["c"]), "entry 1: hit 1: 'docid' must be a string or an integer, "
                                                    "found a list: ['c']"),
])
def test_bad_candidates(tmp_path, mutate, words):
    entries = [_entry(1, ["a", "b"]), _entry(2, ["b", "c"])]
    mutate(entries)
    js = tmp_path / "cands.json"
    js.write_text(json.dumps(entries))
    with pytest.raises(DataFormatError) as e:
        read_candidates(js)
    assert str(e.value).startswith(str(js)) and words in str(e.value)
    jl = tmp_path / "cands.jsonl"  # the same problem in JSONL is reported with its line number
    jl.write_text("".join(json.dumps(e) + "\n" for e in entries))
    with pytest.raises(DataFormatError) as e:
        read_candidates(jl)
    line = 1 if words.startswith("entry 0") else 2
    assert str(e.value).startswith(f"{jl}, line {line}: ") and words.split(": ", 1)[1] in str(e.value)


def test_candidates_json_syntax_and_shape(tmp_path):
    js = tmp_path / "c.json"
    js.write_text('[\n  {"query": "x",\n   "hits": [}\n]')
    with pytest.raises(DataFormatError, match=r"c\.json, line 3: invalid JSON"):
        read_candidates(js)
    js.write_text('{"query": "x"}')
    with pytest.raises(DataFormatError, match="expected a JSON list"):
        read_candidates(js)
    js.write_text("[]")
    with pytest.raises(DataFormatError, match="candidates list is empty"):
        read_candidates(js)
    js.write_bytes(b'\xef\xbb\xbf[{"query": "x", "hits": [{"qid": 1, "docid": "d", "content": "t", "score": 1}]}]')
    assert read_candidates(js)[1] == {"1": {"d": 1.0}}  # a byte order mark is not a JSON error
    gz = tmp_path / "c.json.gz"  # a compressed JSON list, as .gz is accepted everywhere else
    gz.write_bytes(gzip.compress(b'[{"query": "x", "hits": [{"qid": 1, "docid": "d", "content": "t", "rank": 1}]}]'))
    assert read_candidates(gz)[1] == {"1": {"d": -1.0}}


def test_real_candidates(shared_data):
    queries, run, docs = read_candidates(shared_data / "trec-dl" / "candidates" / "BM25" / "retrieve_results_dl19.json")
    assert len(queries) == 43 and all(len(d) == 100 for d in run.values())
    assert set(docs) == {d for ds in run.values() for d in ds}

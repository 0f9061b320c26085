"""Training sources: every kind on small files, ir_datasets ids through its real loading code, real DL20 data."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rerankers.errors import DataFormatError, TrainingDataError, UsageError
from rerankers.train.sources import detect_kind, load_training_queries, text_id

ROOT = Path(__file__).resolve().parents[2]
LOGGER = "rerankers.train.sources"


def _write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def _hit(qid, docid, rank, score, content=None):
    return {"qid": qid, "docid": docid, "rank": rank, "score": score, "content": content or f"text of {docid}"}


def _ids(cands):
    return [c.docid for c in cands]


def _warnings(caplog):
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.fixture()
def candidates(tmp_path):
    """Two candidates sources: a JSON list (q1, q2) and JSONL (q3, which also holds d9's text)."""
    first = [
        {"query": "query one", "hits": [_hit(1, "d1", 1, 4.0), _hit(1, "d2", 2, 3.0), _hit(1, "d3", 3, 2.0),
                                        _hit(1, "d4", 4, 1.0)]},
        {"query": "query two", "hits": [_hit(2, "d5", 1, 2.0), _hit(2, "d6", 2, 1.0)]},
    ]
    second = {"query": "query three", "hits": [_hit(3, "d9", 1, 5.0, "nine"), _hit(3, "d7", 2, 1.0)]}
    qrels = ("1 0 d2 3\n1 0 d3 1\n1 0 d9 2\n1 0 d8 2\n"  # d9 only in the other file, d8 nowhere
             "2 0 d5 1\n"  # q2: grade 1 only -> no positive at level 2
             "3 0 d9 2\n3 0 d7 -1\n")
    return (_write(tmp_path / "cands.json", json.dumps(first)), _write(tmp_path / "more.jsonl", json.dumps(second)),
            _write(tmp_path / "qrels.txt", qrels))


def test_candidates_positives_negatives_and_drop_warning(candidates, caplog):
    first, second, qrels = candidates
    assert detect_kind(first) == ("candidates", first) and detect_kind(second)[0] == "candidates"
    caplog.set_level(logging.INFO, logger=LOGGER)
    out = load_training_queries(sources=[first, second], qrels=qrels, negatives_depth=3)
    assert [q.qid for q in out] == ["1", "3"]
    q1, q3 = out
    assert q1.text == "query one" and q1.source == first
    # graded qrels: positive = grade >= 2; ranked ones first, then d9 whose text comes from the other file
    assert _ids(q1.positives) == ["d2", "d9"] and [c.label for c in q1.positives] == [3.0, 2.0]
    assert q1.positives[1].text == "nine"
    # top-3 ranks, judged-relevant d2 left out; d3 judged 1 stays (label 1.0); d4 beyond the depth
    assert _ids(q1.negatives) == ["d1", "d3"] and [c.label for c in q1.negatives] == [0.0, 1.0]
    assert _ids(q3.positives) == ["d9"] and _ids(q3.negatives) == ["d7"] and q3.negatives[0].label == 0.0
    warned = _warnings(caplog)
    assert len(warned) == 1  # one warning for the first source: dropped q2 and skipped d8
    msg = warned[0].getMessage()
    assert first in msg and "dropped 1 of 2 queries (1 with no positive" in msg and "e.g. 2)" in msg
    assert "skipped 1 documents with no text" in msg and "d8" in msg
    infos = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]
    assert f"training source {first} (candidates): 1 queries, 2 positives, 2 negatives" in infos


def test_rel_level_on_graded_qrels(candidates):
    first, _, qrels = candidates
    out = load_training_queries(sources=[first], qrels=qrels, rel_level=1)
    q1, q2 = out  # grade 1 now counts: q2 has a positive, and d3 moves from the negatives to the positives
    assert _ids(q1.positives) == ["d2", "d3"] and _ids(q1.negatives) == ["d1", "d4"]
    assert _ids(q2.positives) == ["d5"] and _ids(q2.negatives) == ["d6"]
    assert _ids(load_training_queries(sources=[first], qrels=qrels, rel_level=3)[0].positives) == ["d2"]


def test_binary_qrels_default_level_is_one(tmp_path, candidates):
    first, _, _ = candidates
    qrels = _write(tmp_path / "binary.txt", "1 0 d3 1\n2 0 d6 1\n")
    out = load_training_queries(sources=[first], qrels=qrels)
    assert [(q.qid, _ids(q.positives), _ids(q.negatives)) for q in out] == [
        ("1", ["d3"], ["d1", "d2", "d4"]), ("2", ["d6"], ["d5"])]


def test_same_query_in_two_sources_merges(tmp_path, candidates):
    first, _, qrels = candidates
    other = [{"query": "query  one", "hits": [_hit(1, "d3", 1, 9.0), _hit(1, "d10", 2, 8.0), _hit(1, "d9", 3, 7.0)]}]
    other_path = _write(tmp_path / "other.json", json.dumps(other))
    out = load_training_queries(sources=[first, other_path], qrels=qrels, rel_level=2)
    assert [q.qid for q in out] == ["1"]  # q2 has no positive; q1 once, with both pools
    q1 = out[0]
    assert _ids(q1.positives) == ["d2", "d9"] and _ids(q1.negatives) == ["d1", "d3", "d4", "d10"]
    assert q1.source == f"{first} + {other_path}"
    clash = _write(tmp_path / "clash.json", json.dumps([{"query": "another text", "hits": [_hit(1, "d1", 1, 1.0)]}]))
    with pytest.raises(UsageError, match="query '1' has different texts"):
        load_training_queries(sources=[first, clash], qrels=qrels)


def test_run_with_corpus_and_queries(tmp_path, caplog):
    run = _write(tmp_path / "run.trec", "7 Q0 a 1 3.0 bm25\n7 Q0 b 2 2.0 bm25\n7 Q0 zz 3 1.0 bm25\n"
                                        "8 Q0 c 1 1.0 bm25\n9 Q0 a 1 1.0 bm25\n")
    corpus = _write(tmp_path / "collection.tsv", "a\talpha\nb\tbeta\nc\tgamma\nd\tdelta\n")
    queries = _write(tmp_path / "queries.tsv", "7\tseven\n8\teight\n")  # 9 has no text
    qrels = _write(tmp_path / "qrels.txt", "7 0 b 1\n7 0 d 1\n8 0 c 1\n")
    assert detect_kind(run)[0] == "run"
    with pytest.raises(UsageError, match=r"\(run\) needs document texts: --corpus"):
        load_training_queries(sources=[run], qrels=qrels, queries=queries)
    with pytest.raises(UsageError, match=r"\(run\) needs qrels"):
        load_training_queries(sources=[run], corpus=corpus, queries=queries)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    out = load_training_queries(sources=[run], qrels=qrels, corpus=corpus, queries=queries)
    assert len(out) == 1
    q = out[0]
    assert (q.qid, q.text) == ("7", "seven")
    assert [(c.docid, c.text, c.label) for c in q.positives] == [("b", "beta", 1.0), ("d", "delta", 1.0)]
    assert [(c.docid, c.text) for c in q.negatives] == [("a", "alpha")]  # zz has no text: skipped
    (record,) = _warnings(caplog)
    msg = record.getMessage()
    assert "dropped 2 of 3 queries (1 with no negative, 1 with no query text; e.g. 9, 8)" in msg
    assert "skipped 1 documents with no text in" in msg and "zz" in msg


def test_msmarco_three_column_run_and_forced_kind(tmp_path):
    run = _write(tmp_path / "top.tsv", "7\ta\t1\n7\tb\t2\n")
    assert detect_kind(run) == ("run", run)
    triples = _write(tmp_path / "ids.tsv", "7\ta\t1\n8\tb\t2\n")
    assert detect_kind(triples)[0] == "id-triples"
    assert detect_kind(f"run:{triples}") == ("run", triples)


def test_jsonl_merges_lines_and_reads_scores(tmp_path):
    lines = [
        {"qid": 5, "query": "q five", "positives": ["good"], "negatives": ["bad", "worse"],
         "scores": {"positives": [9.5], "negatives": [1.0, None]}},
        {"qid": "5", "query": "q five", "negatives": ["bad", "good", "other"]},  # same query: merges
        {"query": "no id", "positives": ["p"], "negatives": ["n"]},
    ]
    path = _write(tmp_path / "train.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    assert detect_kind(path)[0] == "jsonl"
    q5, q6 = load_training_queries(sources=[path])
    assert q5.qid == "5" and [c.text for c in q5.positives] == ["good"]
    assert [c.text for c in q5.negatives] == ["bad", "worse", "other"]  # "good" is its positive: never a negative
    assert _ids(q5.positives) == [text_id("good", "d")]
    assert [c.teacher for c in q5.positives] == [9.5] and [c.teacher for c in q5.negatives] == [1.0, None, None]
    assert [c.label for c in q5.positives + q5.negatives] == [1.0, 0.0, 0.0, 0.0]
    assert q6.qid == text_id("no id", "q") and q6.qid.startswith("q") and len(q6.qid) == 17


@pytest.mark.parametrize("line, reason", [
    ('{"query": "q", "positives": ["a"], "scores": {"positives": [1, 2]}}', "'scores.positives' must be a list of 1"),
    ('{"query": "q", "positives": ["a"], "scores": {"positives": ["x"]}}', "is not a finite number"),
    ('{"query": "q", "positives": "a"}', "'positives' must be a list of texts"),
    ('{"query": "q", "positives": ["a", ""]}', "'positives'[1] must be a non-empty string"),
    ('{"query": "", "positives": ["a"]}', "'query' must be a non-empty string"),
    ('{"query": "q", "positives": ["a"]', "invalid JSON"),
    ('{"qid": "1", "query": "other", "positives": ["a"]}', "query '1' has another text than at line 1"),
])
def test_jsonl_malformed_lines_name_file_and_line(tmp_path, line, reason):
    path = _write(tmp_path / "bad.jsonl", '{"qid": "1", "query": "q", "positives": ["a"], "negatives": ["b"]}\n\n'
                  + line + "\n")
    with pytest.raises(DataFormatError, match=re.escape(reason)) as err:
        load_training_queries(sources=[path])
    assert err.value.path == path and err.value.line == 3 and f"{path}, line 3" in str(err.value)


def test_text_triples_merge_and_stable_ids(tmp_path):
    path = _write(tmp_path / "triples.tsv", "what is a cat\ta small feline\ta big dog\n"
                                            "what is a cat\ta small feline\ta fish\n"
                                            "capital of france\tparis\tlyon\n"
                                            "what is a cat\tcats are felines\ta big dog\n")
    assert detect_kind(path)[0] == "text-triples"
    cat, france = load_training_queries(sources=[path])
    assert cat.qid == text_id("what is a cat", "q") and cat.text == "what is a cat"
    assert [c.text for c in cat.positives] == ["a small feline", "cats are felines"]
    assert [c.text for c in cat.negatives] == ["a big dog", "a fish"]
    assert _ids(cat.negatives) == [text_id("a big dog", "d"), text_id("a fish", "d")]
    assert (france.text, _ids(france.positives)) == ("capital of france", [text_id("paris", "d")])
    assert [q.qid for q in load_training_queries(sources=[path])] == [cat.qid, france.qid]  # deterministic


def test_text_triples_malformed_line(tmp_path):
    path = _write(tmp_path / "triples.tsv", "q\tpositive text\tnegative text\nq\tpositive text\n")
    with pytest.raises(DataFormatError, match="line 2: expected 3 tab-separated fields") as err:
        load_training_queries(sources=[path])
    assert err.value.path == path and err.value.line == 2
    path = _write(tmp_path / "empty_field.tsv", "q\tpositive text\tnegative text\n\t \tnegative text\n")
    with pytest.raises(DataFormatError, match="line 2: empty query text"):
        load_training_queries(sources=[path])


def test_id_triples(tmp_path, caplog):
    triples = _write(tmp_path / "triples.ids.tsv", "1\t10\t11\n1\t10\t12\n2\t20\t21\n2\t20\t99\n")
    corpus = _write(tmp_path / "collection.tsv", "10\tten\n11\televen\n12\ttwelve\n20\ttwenty\n21\ttwenty-one\n")
    queries = _write(tmp_path / "queries.train.tsv", "1\tone\n2\ttwo\n")
    assert detect_kind(triples)[0] == "id-triples"
    with pytest.raises(UsageError, match=r"\(id-triples\) needs query texts"):
        load_training_queries(sources=[triples], corpus=corpus)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    q1, q2 = load_training_queries(sources=[triples], corpus=corpus, queries=queries)
    assert (q1.qid, q1.text, _ids(q1.positives), _ids(q1.negatives)) == ("1", "one", ["10"], ["11", "12"])
    assert [c.text for c in q1.negatives] == ["eleven", "twelve"] and q1.positives[0].label == 1.0
    assert (_ids(q2.positives), _ids(q2.negatives)) == (["20"], ["21"])
    assert "skipped 1 documents with no text" in _warnings(caplog)[0].getMessage()
    bad = _write(tmp_path / "bad.ids.tsv", "1\t10\t11\n1\t10\n")
    with pytest.raises(DataFormatError, match="line 2: expected 3 tab-separated ids"):
        load_training_queries(sources=[f"id-triples:{bad}"], corpus=corpus, queries=queries)


def test_teacher_run_attaches_scores(tmp_path, candidates):
    first, _, qrels = candidates
    teacher = _write(tmp_path / "teacher.trec", "1 Q0 d2 1 7.5 t\n1 Q0 d1 2 -1.25 t\n1 Q0 d9 3 0.5 t\n"
                                                "2 Q0 d5 1 3.0 t\n")
    (q1,) = load_training_queries(sources=[first], qrels=qrels, teacher=teacher)
    assert [(c.docid, c.teacher) for c in q1.positives] == [("d2", 7.5)]  # d9 has no text in this source
    assert [(c.docid, c.teacher) for c in q1.negatives] == [("d1", -1.25), ("d3", None), ("d4", None)]
    # a teacher run wins over JSONL scores
    path = _write(tmp_path / "t.jsonl", json.dumps({"qid": "x", "query": "q", "positives": ["a"], "negatives": ["b"],
                                                    "scores": {"positives": [1.0], "negatives": [2.0]}}) + "\n")
    run = _write(tmp_path / "t.trec", f"x Q0 {text_id('a', 'd')} 1 4.0 t\n")
    (qx,) = load_training_queries(sources=[path], teacher=run)
    assert qx.positives[0].teacher == 4.0 and qx.negatives[0].teacher == 2.0


def test_nothing_left_is_an_error(tmp_path, candidates, caplog):
    first, _, _ = candidates
    qrels = _write(tmp_path / "none_relevant.txt", "1 0 d1 0\n2 0 d5 0\n")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with pytest.raises(TrainingDataError, match=f"no training query .* in {re.escape(first)}"):
        load_training_queries(sources=[first], qrels=qrels)
    assert len(_warnings(caplog)) == 1 and "dropped 2 of 2 queries (2 with no positive" in caplog.text


def test_arguments_that_do_not_fit(tmp_path, candidates):
    first, second, qrels = candidates
    triples = _write(tmp_path / "triples.tsv", "q\tpositive text\tnegative text\n")
    with pytest.raises(UsageError, match=r"\(candidates\) needs qrels: --train-qrels"):
        load_training_queries(sources=[first])
    with pytest.raises(UsageError, match="3 values for 2 --train sources"):
        load_training_queries(sources=[first, second], qrels=[qrels, qrels, qrels])
    with pytest.raises(UsageError, match=r"\(text-triples\) takes no qrels"):
        load_training_queries(sources=[first, triples], qrels=[qrels, qrels])
    with pytest.raises(UsageError, match="negatives depth must be positive"):
        load_training_queries(sources=[first], qrels=qrels, negatives_depth=0)
    with pytest.raises(UsageError, match="no training source"):
        load_training_queries(sources=[])
    # one qrels per source, None for the source that takes none; a single qrels serves every source
    out = load_training_queries(sources=[first, triples], qrels=[qrels, None])
    assert [q.qid for q in out] == ["1", text_id("q", "q")]
    assert [q.qid for q in load_training_queries(sources=[first, triples], qrels=qrels)] == [q.qid for q in out]


def test_unknown_kinds(tmp_path, candidates):
    _, _, qrels = candidates
    with pytest.raises(DataFormatError, match="looks like qrels") as err:
        detect_kind(qrels)
    assert err.value.path == qrels and err.value.line == 1
    queries = _write(tmp_path / "queries.tsv", "\n1\tsome query\n")
    with pytest.raises(DataFormatError, match="line 2: cannot tell the kind .* looks like queries or a corpus"):
        load_training_queries(sources=[queries])
    odd = _write(tmp_path / "odd.jsonl", '{"text": "x"}\n')
    with pytest.raises(DataFormatError, match="neither 'hits'"):
        detect_kind(odd)
    with pytest.raises(DataFormatError, match="no such file"):
        load_training_queries(sources=[str(tmp_path / "missing.jsonl")])


# ---- ir_datasets, through its real loading code on files placed in a temporary IR_DATASETS_HOME ---------------
IRDS_SCRIPT = r"""
import json, logging, sys
from rerankers.errors import UsageError
from rerankers.train.sources import detect_kind, load_training_queries
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
def dump(qs):
    return [[q.qid, q.text, [[c.docid, c.text, c.label] for c in q.positives], [c.docid for c in q.negatives]]
            for q in qs]
out = {"kinds": [detect_kind("msmarco-passage/train/judged")[0], detect_kind("msmarco-passage/train/triples-small")[0]]}
out["judged"] = dump(load_training_queries(sources=["msmarco-passage/train/judged"], negatives_run=sys.argv[1],
                                           negatives_depth=3))
out["triples"] = dump(load_training_queries(sources=["msmarco-passage/train/triples-small"]))
try:
    load_training_queries(sources=["msmarco-passage/train/judged"])
except UsageError as e:
    out["no_run"] = str(e)
print(json.dumps(out))
"""


def test_ir_datasets_sources(tmp_path):
    base = tmp_path / "irds" / "msmarco-passage"
    _write(base / "irds_version.txt", "v2")  # else ir_datasets "migrates" (deletes) the collection
    _write(base / "collection.tsv", "".join(f"{i}\tpassage {i}\n" for i in range(6)))
    _write(base / "train" / "queries.tsv", "10\tquery ten\n11\tquery eleven\n12\tunjudged query\n")
    _write(base / "train" / "qrels", "10\t0\t1\t1\n11\t0\t3\t1\n")  # qrels.train.tsv
    _write(base / "train" / "small.triples.qidpid.tsv", "10\t1\t0\n10\t1\t2\n11\t3\t4\n11\t3\t0\n")
    run = _write(tmp_path / "negatives.trec", "10 Q0 0 1 5.0 r\n10 Q0 1 2 4.0 r\n10 Q0 2 3 3.0 r\n"
                                              "10 Q0 5 4 2.0 r\n12 Q0 4 1 1.0 r\n")
    env = {**os.environ, "IR_DATASETS_HOME": str(tmp_path / "irds"), "IR_DATASETS_SKIP_DISK_FREE": "true",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", IRDS_SCRIPT, run], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["kinds"] == ["irds-judged", "irds-docpairs"]
    # judged: qrels + queries + docstore of ir_datasets, negatives from the run's top 3 (1 is relevant);
    # 11 has no negative in the run (dropped); 12 is not judged, so not a query of train/judged
    assert out["judged"] == [["10", "query ten", [["1", "passage 1", 1.0]], ["0", "2"]]]
    assert out["triples"] == [["10", "query ten", [["1", "passage 1", 1.0]], ["0", "2"]],
                              ["11", "query eleven", [["3", "passage 3", 1.0]], ["4", "0"]]]
    assert "needs a run to draw negatives from: negatives_run=FILE" in out["no_run"]
    assert "msmarco-passage/train/judged (irds-judged): dropped 1 of 2 queries (1 with no negative" in proc.stderr


# ---- real data ----------------------------------------------------------------------------------------------------
def test_dl20_bm25_candidates_match_a_direct_count(shared_data):
    cands = shared_data / "trec-dl" / "candidates" / "BM25" / "retrieve_results_dl20.json"
    qrels_path = shared_data / "trec-dl" / "qrels" / "qrels.dl20-passage.txt"
    entries = json.loads(cands.read_text(encoding="utf-8"))
    judged: dict[str, dict[str, int]] = {}
    for line in qrels_path.read_text().splitlines():
        qid, _, docid, grade = line.split()
        judged.setdefault(qid, {})[docid] = int(grade)
    texts = {str(h["docid"]) for e in entries for h in e["hits"]}
    expected = {}
    for e in entries:
        qid = str(e["hits"][0]["qid"])
        rel = {d for d, g in judged.get(qid, {}).items() if g >= 2}
        by_rank = [str(h["docid"]) for h in sorted(e["hits"], key=lambda h: h["rank"])]
        pos = rel & texts
        neg_all = [d for d in by_rank if d not in rel]
        neg_top10 = [d for d in by_rank[:10] if d not in rel]
        if pos and neg_all:
            expected[qid] = (len(pos), len(neg_all), len(neg_top10))
    out = load_training_queries(sources=[str(cands)], qrels=str(qrels_path))
    assert len(out) == len(expected) == 52  # 2 of the 54 have no grade >= 2 passage with text in the file
    assert {q.qid: (len(q.positives), len(q.negatives)) for q in out} == {q: v[:2] for q, v in expected.items()}
    assert sum(len(q.positives) for q in out) == sum(v[0] for v in expected.values())
    top10 = load_training_queries(sources=[str(cands)], qrels=str(qrels_path), negatives_depth=10)
    assert {q.qid: len(q.negatives) for q in top10} == {q: v[2] for q, v in expected.items() if v[2]}
    assert all(c.label < 2 for q in out for c in q.negatives) and all(c.label >= 2 for q in out for c in q.positives)


def test_msmarco_toy_triplets(shared_data):
    path = shared_data / "msmarco-toy" / "triplets" / "raw.tsv"
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = load_training_queries(sources=[str(path)])
    assert [q.text for q in out] == list(dict.fromkeys(r[0].strip() for r in rows))
    assert sum(len(q.positives) for q in out) == len({(r[0], r[1]) for r in rows})
    assert sum(len(q.negatives) for q in out) == len({(r[0], r[2]) for r in rows})
    assert out[0].positives[0].text == rows[0][1].strip() and out[0].negatives[0].text == rows[0][2].strip()

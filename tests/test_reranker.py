"""The library API: Reranker.score / rerank / rerank_run on a tiny saved cross-encoder."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from rerankers import CrossEncoder, RankedResult, Reranker
from rerankers.errors import EmptyInputError, MissingDocumentsError, UnknownQueryError

QUERY = "what is a cat"
DOCS = ["a cat is an animal that purrs", "dogs bark loudly at night", "the sun is hot", "fish swim in the river",
        "cat", "water boils at 100 degrees celsius"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_checkpoints) -> Path:
    root = tmp_path_factory.mktemp("reranker")
    ce = CrossEncoder.from_pretrained(tiny_checkpoints.save_tiny_bert(root / "hf", "bert"))
    ce.save_pretrained(root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def reranker(saved) -> Reranker:
    return Reranker.from_pretrained(saved, device="cpu", batch_tokens=40)


def test_score_and_rerank_agree(reranker):
    scores = reranker.score(QUERY, DOCS)
    assert len(scores) == len(DOCS) and len(set(scores)) == len(DOCS)
    ranked = reranker.rerank(QUERY, DOCS, doc_ids=[f"d{i}" for i in range(len(DOCS))])
    assert [r.score for r in ranked] == sorted(scores, reverse=True)
    assert [r.rank for r in ranked] == list(range(1, len(DOCS) + 1))
    best = max(range(len(DOCS)), key=scores.__getitem__)
    assert ranked[0] == RankedResult(f"d{best}", DOCS[best], scores[best], 1)
    top = reranker.rerank(QUERY, DOCS, top_k=2)
    assert [r.doc_id for r in top] == [int(r.doc_id[1:]) for r in ranked[:2]]  # default ids: positions


def test_scores_do_not_depend_on_batching(saved, reranker):
    one_big = Reranker.from_pretrained(saved, device="cpu", batch_tokens=100_000).score(QUERY, DOCS)
    torch.testing.assert_close(torch.tensor(one_big), torch.tensor(reranker.score(QUERY, DOCS)), rtol=0, atol=1e-6)


def test_throughput_stats(reranker):
    reranker.score(QUERY, DOCS)
    st = reranker.last_stats
    enc = reranker.model.encode([QUERY] * len(DOCS), DOCS)
    assert st.pairs == len(DOCS) and st.tokens == sum(enc.lengths)
    d = st.as_dict()
    assert d["pairs_per_s"] > 0 and d["tokens_per_s"] > 0 and d["model_seconds"] <= d["seconds"]


def test_rerank_run_reranks_top_depth_and_keeps_the_rest_below(reranker):
    queries = {"q1": QUERY, "q2": "dogs"}
    docs = {f"d{i}": t for i, t in enumerate(DOCS)}
    run = {"q1": {"d0": 1.0, "d1": 5.0, "d2": 4.0, "d3": 3.0, "d4": 2.0, "nodoc": 0.5},
           "q2": {"d1": 2.0, "d5": 1.0}}
    out = reranker.rerank_run(run, queries, docs, depth=3)
    assert set(out) == {"q1", "q2"} and set(out["q1"]) == set(run["q1"])
    top3 = ["d1", "d2", "d3"]  # first-stage top 3
    want = dict(zip(top3, reranker.score(QUERY, [docs[d] for d in top3])))
    for d in top3:
        assert out["q1"][d] == pytest.approx(want[d], abs=1e-6)
    rest = sorted((d for d in out["q1"] if d not in top3), key=lambda d: -out["q1"][d])
    assert rest == ["d4", "d0", "nodoc"]  # first-stage order kept (beyond depth, text not needed)
    assert max(out["q1"][d] for d in rest) < min(out["q1"][d] for d in top3)


def test_rerank_run_bad_input(reranker):
    docs = {"d0": DOCS[0]}
    with pytest.raises(MissingDocumentsError, match=r"2 document id\(s\) absent .* e\.g\. 'x1', 'x2'"):
        reranker.rerank_run({"q1": {"d0": 3.0, "x1": 2.0, "x2": 1.0}}, {"q1": QUERY}, docs, depth=10)
    with pytest.raises(UnknownQueryError, match=r"1 query id\(s\) absent .*'q9'"):
        reranker.rerank_run({"q9": {"d0": 1.0}}, {"q1": QUERY}, docs)
    with pytest.raises(EmptyInputError, match="q1/d1"):
        reranker.rerank_run({"q1": {"d0": 2.0, "d1": 1.0}}, {"q1": QUERY}, {"d0": DOCS[0], "d1": " "})


def test_overlong_documents_are_truncated_and_counted(reranker, caplog):
    long_doc = " ".join(["fish swim in the river"] * 40)  # 200 words > max_length 96
    with caplog.at_level(logging.WARNING):
        scores = reranker.score(QUERY, [long_doc, DOCS[0], long_doc + " cat"])
    assert all(torch.isfinite(torch.tensor(scores)))
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("2 of 3 documents were truncated" in m for m in msgs)
    assert scores[0] == pytest.approx(scores[2], abs=1e-6)  # both cut to the same first 96 tokens


def test_bad_arguments_are_rerankers_errors(reranker):
    from rerankers.errors import RerankersError
    with pytest.raises(RerankersError, match="device 'gpu0'"):
        Reranker(reranker.model, device="gpu0")
    for kw in ({"batch_tokens": 0}, {"max_pairs": 0}, {"chunk_pairs": 0}):
        with pytest.raises(RerankersError, match=f"{next(iter(kw))} must be positive"):
            Reranker(reranker.model, device="cpu", **kw)
    with pytest.raises(RerankersError, match="top_k must be >= 0, got -1"):
        reranker.rerank(QUERY, DOCS, top_k=-1)
    with pytest.raises(RerankersError, match="1 queries but 2 documents"):
        reranker.score_pairs([QUERY], DOCS[:2])


def test_a_path_or_name_is_accepted_and_a_string_of_docs_refused(saved):
    """issue 10, defect 14: Reranker(path) loads it; docs given as one str is an error, not characters."""
    from rerankers.errors import RerankersError

    r = Reranker(str(saved), device="cpu")
    assert len(r.score(QUERY, DOCS[:2])) == 2
    with pytest.raises(RerankersError, match="not one string"):
        r.rerank(QUERY, "a cat is an animal")
    with pytest.raises(RerankersError, match="not one string"):
        r.score(QUERY, "a cat")
    with pytest.raises(RerankersError, match="must be a CrossEncoder"):
        Reranker(42)


def test_predict_and_rank_follow_sentence_transformers(reranker):
    """predict(pairs) -> scores in order; rank(query, docs, top_k) -> dicts by descending score (issue 10)."""
    scores = reranker.score(QUERY, DOCS)
    assert reranker.predict([(QUERY, d) for d in DOCS]) == pytest.approx(scores)
    ranked = reranker.rank(QUERY, DOCS, top_k=3, return_documents=True)
    order = sorted(range(len(DOCS)), key=lambda i: -scores[i])[:3]
    assert [r["corpus_id"] for r in ranked] == order
    assert [r["text"] for r in ranked] == [DOCS[i] for i in order]
    assert set(reranker.rank(QUERY, DOCS)[0]) == {"corpus_id", "score"}
    from rerankers.errors import RerankersError
    with pytest.raises(RerankersError, match="pairs"):
        reranker.predict(["just a string", "another"])


@pytest.mark.parametrize("level, shown", [(logging.NOTSET, True), (logging.INFO, True), (logging.ERROR, False)],
                         ids=["library-default", "cli", "cli-quiet"])
def test_a_progress_bar_counts_the_pairs_on_a_terminal_and_not_under_quiet(reranker, monkeypatch, terminal_stderr,
                                                                          level, shown):
    """tqdm on stderr for long scoring calls (here with no delay): every pair counted, hidden under -q."""

    import rerankers.utils.progress as progress
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    terminal = terminal_stderr()
    pkg = logging.getLogger("rerankers")
    before = pkg.level
    pkg.setLevel(level)
    try:
        reranker.score(QUERY, DOCS)
    finally:
        pkg.setLevel(before)
    text = terminal.text
    assert ("rerank: 100%" in text and f"{len(DOCS)}/{len(DOCS)}" in text) == shown
    assert shown or text == ""

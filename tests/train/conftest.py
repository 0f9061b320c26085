"""Training fixtures: the bundled sample as training data (BM25 candidates + graded qrels), tiny
random BERT and Mamba checkpoints over a word vocabulary of the sample (built here, never downloaded)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


def _sample_texts():
    from rerankers.data.texts import read_corpus, read_queries
    from rerankers.pipeline import sample_data_dir

    data = sample_data_dir()
    return data, read_queries(data / "queries.tsv"), read_corpus(data / "collection.tsv")


@pytest.fixture(scope="session")
def sample_training(tmp_path_factory) -> dict:
    """Paths of a training setup on the bundled sample: BM25 top-30 run, a candidates file with texts
    of the same run (JSON, the rank_llm format), the corpus, queries and qrels."""
    from rerankers.data.trec import ranked, write_run
    from rerankers.retrieval import BM25Config, bm25_retrieve

    data, queries, docs = _sample_texts()
    root = tmp_path_factory.mktemp("sample-train")
    run = bm25_retrieve(docs, queries, k=30, config=BM25Config())
    write_run(run, root / "bm25.trec", tag="bm25")
    entries = [{"query": queries[q], "hits": [{"qid": q, "docid": d, "rank": r, "score": s, "content": docs[d]}
                                              for r, (d, s) in enumerate(ranked(run[q]), start=1)]}
               for q in sorted(run)]
    (root / "candidates.json").write_text(json.dumps(entries))
    return {"run": str(root / "bm25.trec"), "candidates": str(root / "candidates.json"),
            "corpus": str(data / "collection.tsv"), "queries": str(data / "queries.tsv"),
            "qrels": str(data / "qrels.txt")}


def _sample_words():
    _, queries, docs = _sample_texts()
    return [*queries.values(), *docs.values()]


def save_tiny_bert(folder: Path, texts=None, dropout: float = 0.1) -> Path:
    """A 2-layer BERT (hidden 32) with random weights and a word tokenizer of ``texts`` (default: the sample)."""
    from rerankers.train.tiny import save_tiny_backbone

    save_tiny_backbone("bert", folder, _sample_words() if texts is None else texts, seed=0, dropout=dropout,
                       hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_bert_for():
    """``tiny_bert_for(folder, texts)``: a tiny BERT whose vocabulary covers ``texts``."""
    return save_tiny_bert


@pytest.fixture(scope="session")
def tiny_mamba_dir(tmp_path_factory) -> Path:
    """A 2-layer Mamba-1 (d_model 32) with random weights and a word tokenizer of the sample."""
    from rerankers.train.tiny import save_tiny_backbone

    folder = tmp_path_factory.mktemp("tiny-mamba")
    save_tiny_backbone("mamba", folder, _sample_words(), seed=0, d_model=32, n_layer=2, d_state=8, expand=2)
    return folder

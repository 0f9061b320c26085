"""End to end on the CPU: ``rerank eval --model <tiny saved model> --candidates <DL19 BM25> --qrels ...``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))
from tiny_checkpoints import save_tiny_bert  # noqa: E402

from rerankers.cli import main  # noqa: E402
from rerankers.data.trec import read_run  # noqa: E402
from rerankers.models.cross_encoder import CrossEncoder  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval_model")
    CrossEncoder.from_pretrained(save_tiny_bert(root / "hf", "bert")).save_pretrained(root / "tiny-bert")
    return root / "tiny-bert"


def test_rerank_eval_with_model_on_dl19_candidates(shared_data, tiny_model, tmp_path, capsys):
    cands = shared_data / "trec-dl" / "candidates" / "BM25" / "retrieve_results_dl19.json"
    qrels = shared_data / "trec-dl" / "qrels" / "qrels.dl19-passage.txt"
    out = tmp_path / "reranked.trec"
    rc = main(["eval", "--model", str(tiny_model), "--candidates", str(cands), "--qrels", str(qrels),
               "--depth", "10", "--device", "cpu", "--batch-tokens", "4096", "--output", str(out)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    run = read_run(out)
    from rerankers.data.texts import read_candidates
    from rerankers.data.trec import ranked

    _, first_stage, _ = read_candidates(cands)
    assert len(run) == 43 and all(len(docs) == 100 for docs in run.values())
    for qid, docs in run.items():  # the top 10 reranked among themselves, the other 90 below in BM25 order
        bm25_order = [d for d, _ in ranked(first_stage[qid])]
        new_order = [d for d, _ in ranked(docs)]
        assert set(new_order[:10]) == set(bm25_order[:10]) and new_order[10:] == bm25_order[10:]
    rows = [line for line in printed.out.splitlines() if "retrieve_results_dl19" in line]
    assert len(rows) == 2 and "tiny-bert@10" in rows[1]  # first stage, then reranked
    assert "pairs/s" in printed.out and "tokens/s" in printed.out


def test_rerank_eval_with_unknown_model_is_one_line_error(shared_data, tmp_path, capsys):
    cands = shared_data / "trec-dl" / "candidates" / "BM25" / "retrieve_results_dl19.json"
    qrels = shared_data / "trec-dl" / "qrels" / "qrels.dl19-passage.txt"
    rc = main(["eval", "--model", "bert-gigantic", "--candidates", str(cands), "--qrels", str(qrels),
               "--depth", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown backbone 'bert-gigantic'" in err and "minilm-l6" in err

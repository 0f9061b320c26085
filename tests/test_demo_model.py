"""`rerank demo --model`: the bundled sample, BM25 -> rerank with a saved cross-encoder -> table."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))
from tiny_checkpoints import save_tiny_bert  # noqa: E402

from rerankers.cli import main  # noqa: E402
from rerankers.data.trec import read_run  # noqa: E402
from rerankers.models.cross_encoder import CrossEncoder  # noqa: E402


def test_demo_reranks_bm25_candidates_with_a_model(tmp_path, capsys):
    model = tmp_path / "tiny-bert"
    CrossEncoder.from_pretrained(save_tiny_bert(tmp_path / "hf", "bert")).save_pretrained(model)
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--k", "8", "--model", str(model), "--device", "cpu"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    bm25, reranked = read_run(out / "bm25.trec"), read_run(out / "reranked.trec")
    assert set(bm25) == set(reranked) and len(bm25) == 40
    assert all(set(bm25[q]) == set(reranked[q]) for q in bm25)  # same candidates, new order
    rows = [line for line in printed.out.splitlines() if "BM25" in line]
    assert len(rows) == 2 and "tiny-bert" in rows[1] and "pairs/s" in printed.out


def test_demo_with_a_missing_model_is_one_line_error(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path / "demo"), "--k", "5", "--model", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("rerank: error:")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err
    assert "unknown backbone" in errors[0] and "nope" in errors[0]

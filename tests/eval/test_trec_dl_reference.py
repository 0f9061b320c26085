"""Reference figures on real TREC DL runs (BM25 nDCG@10: DL19 0.5058, DL20 0.4796), via the CLI."""
from __future__ import annotations

import json

import pytest

from rerankers.cli import main


@pytest.mark.parametrize("year, ndcg10", [("dl19", 0.5058), ("dl20", 0.4796)])
def test_bm25_ndcg10(shared_data, capsys, year, ndcg10):
    dl = shared_data / "trec-dl"
    code = main(["eval", "--run", str(dl / "candidates" / "BM25" / f"trec_results_{year}.txt"),
                 "--qrels", str(dl / "qrels" / f"qrels.{year}-passage.txt"), "--format", "json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    row = report["runs"][0]
    assert round(row["means"]["nDCG@10"], 4) == ndcg10
    assert row["rel_level"] == 2 and row["num_queries"] == {"dl19": 43, "dl20": 54}[year]


def test_table_and_significance(shared_data, capsys, tmp_path):
    """Two DL19 runs: the table lists both, SPLADE++ is significantly better than BM25 on nDCG@10."""
    dl = shared_data / "trec-dl"
    runs = [str(dl / "candidates" / s / "trec_results_dl19.txt") for s in ("BM25", "SPLADE_P_P_ENSEMBLE_DISTIL")]
    code = main(["eval", "--run", *runs, "--qrels", str(dl / "qrels" / "qrels.dl19-passage.txt"),
                 "--metrics", "nDCG@10", "MRR@10", "--save-report", str(tmp_path / "rep")])
    assert code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["run", "queries", "nDCG@10", "MRR@10"]
    assert lines[2].split()[:3] == ["BM25/trec_results_dl19", "43", "0.5058"]
    assert lines[3].split()[2] == "0.7308^"
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["runs"][1]["p_values"]["nDCG@10"] < 1e-3
    assert len(saved["runs"][0]["per_query"]["nDCG@10"]) == 43
    assert (tmp_path / "rep" / "report.md").read_text().startswith("| run | queries | nDCG@10 | MRR@10 |")

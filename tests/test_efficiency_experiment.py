"""experiments/efficiency/run.py: the rows of the efficiency table, on the CPU with a tiny model (the GPU
table is made by the same function on the device machine)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "efficiency" / "run.py"


def _script():
    spec = importlib.util.spec_from_file_location("efficiency_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_for_fp32_and_int8(tiny_cross_encoder, tmp_path):
    docs = {"d1": "a cat purrs at night", "d2": "the dog barks", "d3": "water boils", "d4": "berlin is a city"}
    entries = [{"query": q, "hits": [{"qid": qid, "docid": d, "rank": r, "score": 5.0 - r, "content": docs[d]}
                                     for r, d in enumerate(order, start=1)]}
               for qid, q, order in (("q1", "what is a cat", ["d2", "d1", "d3"]), ("q2", "capital city", ["d4", "d3"]))]
    (tmp_path / "c.json").write_text(json.dumps(entries))
    (tmp_path / "qrels.txt").write_text("q1 0 d1 3\nq1 0 d2 0\nq2 0 d4 2\n")
    out = tmp_path / "eff" / "rows.json"
    _script().main(["--model", str(tiny_cross_encoder), "--candidates", str(tmp_path / "c.json"), "--qrels",
                    str(tmp_path / "qrels.txt"), "--out", str(out), "--device", "cpu", "--depth", "3"])
    doc = json.loads(out.read_text())
    fp32, int8 = doc["rows"]
    assert (fp32["quantize"], int8["quantize"]) == ("none", "int8") and doc["depth"] == 3
    assert fp32["parameters"] == int8["parameters"] > 0 and fp32["disk_bytes"] == int8["disk_bytes"] > 0
    assert int8["memory_bytes"] < fp32["memory_bytes"] and fp32["peak_memory_bytes"] is None  # CPU: no CUDA peak
    assert fp32["pairs"] == int8["pairs"] == 5 and fp32["model_pairs_per_s"] > 0 and fp32["tokens"] > 0
    assert 0.0 <= fp32["metrics"]["nDCG@10"] <= 1.0 and fp32["queries"] == 2
    assert fp32["device"].startswith("CPU") and fp32["dtype"] == "torch.float32"

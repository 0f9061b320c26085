"""experiments/efficiency/run.py: the rows of the efficiency table, on the CPU with a tiny model (the GPU
table is made by the same function on the device machine)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

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


def _render():
    spec = importlib.util.spec_from_file_location("efficiency_render", SCRIPT.with_name("render.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(model, quantize, ndcg, memory, peak=2**20, disk=90_000_000, device="NVIDIA H200"):
    return {"model": model, "quantize": quantize, "parameters": 22_713_601, "disk_bytes": disk,
            "memory_bytes": memory, "peak_memory_bytes": peak, "model_pairs_per_s": 12345.6,
            "metrics": {"nDCG@10": ndcg, "MRR@10": 0.7}, "device": device, "dtype": "torch.bfloat16"}


def _synthetic_results(folder: Path) -> Path:
    """What device_run.sh returns, in small: the set-up line, FULL, a pruning, a recovery run with no efficiency
    row (cut off), a skipped LoRA run; GPU rows for FULL (fp32, int8) and the pruned copy, a CPU row for FULL."""
    folder.mkdir()
    train = {"throughput": {"tokens_per_s": 100_000.0, "peak_memory_gib": 1.03}, "steps": 140}
    lines = [{"step": "setup", "date": "2026-12-02", "software": {"torch": "2.11.0", "transformers": "5.17.0"},
              "card": "NVIDIA H200, 143771 MiB", "cpus": 16},
             {"variant": "full", "rc": 0, "technique": "FULL: MiniLM-L6", "trainable_params": 22_713_601,
              "params": 22_713_601, "dev": {"nDCG@10": 0.55, "MRR@10": 0.7}, "model_dir": "/tmp/runs/full/model",
              **train},
             {"step": "pruned-h6-f05", "rc": 0, "technique": "FULL pruned: 6/12 heads", "model_dir": "/tmp/runs/p"},
             {"variant": "pruned-h6-f05-ft", "rc": 124, "technique": "PRUNED + recovery",
              "trainable_params": 17_000_000, "params": 17_000_000, "dev": {"nDCG@10": 0.5, "MRR@10": 0.6}, **train},
             {"variant": "lora64", "skipped": "no time left", "left": 3}]
    (folder / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    gpu = {"candidates": "dl19.json.gz", "qrels": "dl19.txt", "depth": 100, "options": {"batch_tokens": 16384},
           "rows": [_row("/tmp/runs/full/model", "none", 0.55, 90 * 2**20),
                    _row("/tmp/runs/full/model", "int8", 0.56, 56 * 2**20),
                    _row("/tmp/runs/pruned-h6-f05", "none", 0.45, 66 * 2**20, disk=70_000_000)]}
    cpu = {**gpu, "depth": 20, "rows": [_row("/tmp/runs/full/model", "none", 0.5, 90 * 2**20, peak=None, device="CPU")]}
    (folder / "efficiency.json").write_text(json.dumps(gpu))
    (folder / "efficiency-cpu.json").write_text(json.dumps(cpu))
    return folder


def test_render_table_on_synthetic_results(tmp_path):
    render = _render()
    res = render.read_results(_synthetic_results(tmp_path / "res"))
    rows = render.table_rows(res["gpu"], res["steps"])
    assert [(r["name"], r["quantize"]) for r in rows] == [("full", "none"), ("full", "int8"), ("pruned-h6-f05", "none"),
                                                          ("pruned-h6-f05-ft", "none")]
    full, int8, pruned, recovery = rows
    assert full["trained"] == 22_713_601 and full["steps"] == 140 and full["train_tok_s"] == 100_000.0
    assert int8["delta"] == pytest.approx(0.01) and pruned["delta"] == pytest.approx(-0.10)
    assert pruned["trained"] is None and pruned["disk_mb"] == 70.0 and pruned["infer_peak_mib"] == 1.0
    assert recovery["from_training"] and recovery["ndcg"] == 0.5 and recovery["pairs_s"] is None
    md = render.to_markdown(res, image="efficiency.png")
    assert "NVIDIA H200, 143771 MiB" in md and "torch 2.11.0" in md and "2026-12-02" in md
    assert "skipped: lora64 (no time left)" in md and "pruned-h6-f05-ft (exit status 124, its time box)" in md
    assert "| ↳ the same, quantized | int8 |" in md and "+0.0100" in md and "-0.1000" in md
    assert "0.5000 (training report)" in md and "![nDCG@10 against model size](efficiency.png)" in md
    gpu_part, cpu_part = md.split("**CPU**")
    assert "top 20 of" in cpu_part and cpu_part.count("| FULL: MiniLM-L6 |") == 1 and "PRUNED" not in cpu_part


def test_render_cli_writes_markdown_plot_and_block(tmp_path):
    pytest.importorskip("matplotlib")
    render = _render()
    folder = _synthetic_results(tmp_path / "res")
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\nkept\n")
    for _ in range(2):  # the second run replaces the block instead of appending another
        assert render.main([str(folder), "--into", str(bench)]) == 0
    assert (folder / "efficiency.png").stat().st_size > 0
    assert "| FULL: MiniLM-L6 |" in (folder / "efficiency.md").read_text()
    text = bench.read_text()
    assert text.startswith("# Benchmarks\n\nkept\n") and text.count(render.BEGIN) == 1 and text.count(render.END) == 1
    assert "### Efficiency" in text and "](res/efficiency.png)" in text

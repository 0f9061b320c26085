"""The efficiency table (issue 15): size, parameters, memory, throughput and quality of cross-encoders and
their int8 / pruned / distilled variants, one JSON row each. Run it where the numbers mean something (GPU):

    python experiments/efficiency/run.py --model runs/m/model runs/m-pruned runs/m-student \\
        --quantize none int8 --candidates ../shared/data/trec-dl/candidates/BM25/retrieve_results_dl19.json \\
        --qrels ../shared/data/trec-dl/qrels/qrels.dl19-passage.txt --out efficiency.json --device cuda

Each (model, quantize) pair gives a row: ``parameters`` (of the fp32 model), ``disk_bytes`` (the model folder's
files; a preset's checkpoint folder; int8 is applied at load, so its disk size is the fp32 folder's),
``memory_bytes`` (parameters + buffers in memory after loading, int8 included), ``peak_memory_bytes`` (the
largest allocation on CUDA while reranking, after a warm-up; null on the CPU), the throughput of
:class:`rerankers.reranker.Throughput` (pairs/s and real tokens/s, whole call and model only) and the metrics
of the reranked run. The rows are written atomically with the settings, software and card, the file rewritten
after every row (a run stopped by a time box keeps what it measured).
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from rerankers.data.datasets import resolve_qrels
from rerankers.data.inputs import load_rerank_inputs
from rerankers.data.trec import Qrels, Run
from rerankers.eval.metrics import evaluate
from rerankers.models.cross_encoder import CrossEncoder
from rerankers.models.presets import resolve
from rerankers.models.quantize import check_quantize, model_size_bytes
from rerankers.reranker import Reranker
from rerankers.train.progress import count_parameters, device_name
from rerankers.utils.io import atomic_write, check_writable

logger = logging.getLogger("efficiency")

METRICS = ("nDCG@10", "MRR@10")


def folder_bytes(model: str) -> int | None:
    """Bytes of the files of a model's local folder (a saved folder, or a preset's checkpoint); None if none."""
    try:
        folder, _ = resolve(model)
    except Exception:  # a hub id that is not cached: no folder to measure
        return None
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) if folder else None


def efficiency_row(model: str, run: Run, queries: Mapping[str, str], docs: Mapping[str, str], qrels: Qrels, *,
                   quantize: str | None = None, device: str | None = None, dtype: str | None = None,
                   batch_tokens: int = 16384, depth: int = 100, warmup_pairs: int = 64,
                   metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    """Load ``model`` (int8 with ``quantize``), warm up on ``warmup_pairs`` pairs, rerank the top ``depth`` of
    ``run`` and measure: the row described in the module doc."""
    cross_encoder = CrossEncoder.from_pretrained(model)
    parameters = count_parameters(cross_encoder)
    reranker = Reranker(cross_encoder, device=device, dtype=dtype, batch_tokens=batch_tokens, quantize=quantize)
    pairs = [(queries[q], docs[d]) for q in sorted(run) for d in run[q] if d in docs][:warmup_pairs]
    reranker.predict(pairs)  # CUDA context, Triton compilation, allocator: not in the measurement
    cuda = reranker.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(reranker.device)
        torch.cuda.reset_peak_memory_stats(reranker.device)
    reranked = reranker.rerank_run(run, queries, docs, depth=depth)
    stats = reranker.last_stats.as_dict()
    result = evaluate(reranked, qrels, list(metrics))
    return {
        "model": str(model), "quantize": quantize or "none", "backbone_type": cross_encoder.backbone_type,
        "parameters": parameters["total"], "non_embedding_parameters": parameters["non_embedding"],
        "disk_bytes": folder_bytes(str(model)), "memory_bytes": model_size_bytes(reranker.model),
        "peak_memory_bytes": torch.cuda.max_memory_allocated(reranker.device) if cuda else None,
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()},
        "metrics": {m: round(result.means[m], 4) for m in metrics}, "queries": len(result.qids),
        "device": device_name(reranker.device), "dtype": str(reranker.autocast_dtype or torch.float32),
        "head_trained": cross_encoder.head_trained,
    }


def efficiency_table(models: Sequence[str], out: str | Path, *, candidates: str, qrels: str,
                     quantize: Sequence[str | None] = (None, "int8"), depth: int = 100, **options: Any
                     ) -> list[dict[str, Any]]:
    """A row per (model, quantize) on the ``candidates`` judged by ``qrels``, written to ``out`` as JSON."""
    modes = [None if q in (None, "none") else check_quantize(q) for q in quantize]
    check_writable(out)
    judgments, qrels_name = resolve_qrels(qrels)
    run, query_texts, doc_texts = load_rerank_inputs(candidates=candidates, depth=depth)
    import transformers
    rows: list[dict[str, Any]] = []
    doc = {"candidates": str(candidates), "qrels": qrels_name, "depth": depth, "options": options, "rows": rows,
           "software": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "python": platform.python_version()}}
    for model in tqdm(models, desc="models", unit="model"):
        for mode in modes:
            row = efficiency_row(model, run, query_texts, doc_texts, judgments, quantize=mode, depth=depth, **options)
            logger.info("%s %s: %s, %.1f pairs/s, %.1f MiB", model, row["quantize"], row["metrics"],
                        row["model_pairs_per_s"], row["memory_bytes"] / 2**20)
            rows.append(row)
            _write(out, doc)  # after every row: a run cut off (a time box) keeps the rows it measured
    _write(out, doc)
    return rows


def _write(out: str | Path, doc: Mapping[str, Any]) -> None:
    with atomic_write(out) as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", required=True, help="saved cross-encoder folders or preset names")
    ap.add_argument("--quantize", nargs="+", default=["none", "int8"], help="none and/or int8 (default: both)")
    ap.add_argument("--candidates", required=True, help="first-stage candidates with texts (e.g. DL19 BM25)")
    ap.add_argument("--qrels", required=True, help="their judgments (a file or a dataset name)")
    ap.add_argument("--out", required=True, help="the JSON file of rows to write")
    ap.add_argument("--depth", type=int, default=100, help="candidates reranked per query (default 100)")
    ap.add_argument("--device", default=None, help="cuda, cpu ... (default: cuda where available)")
    ap.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: bf16 autocast on CUDA)")
    ap.add_argument("--batch-tokens", type=int, default=16384, help="token budget of a packed batch")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    efficiency_table(args.model, args.out, candidates=args.candidates, qrels=args.qrels, quantize=args.quantize,
                     depth=args.depth, device=args.device, dtype=args.dtype, batch_tokens=args.batch_tokens)


if __name__ == "__main__":
    main()

"""Where a training step makes the host wait for the GPU (GPU only; issue 13's host-overlap lever).

A step that never synchronises lets the host queue step k+1's forward while the GPU still runs step k's
backward; one ``.item()``, one pageable host-to-device copy or one ``nonzero`` anywhere in the step
serialises the two. This runs a few steps under ``torch.cuda.set_sync_debug_mode("warn")`` and prints
every synchronising call site (the innermost rerankers frames), with its count:

  * the bench's ``TrainStep`` around ours packed, for each ``--backbone`` at ``--pairs``;
  * ``rerank train``'s loop (``rerankers.train.loop.train``) on tiny random backbones over the bundled sample.

    PYTHONPATH=. python benchmarks/find_syncs.py --backbone mamba-130m bert-base --pairs 64
"""
from __future__ import annotations

import argparse
import collections
import logging
import tempfile
import traceback
import warnings
from pathlib import Path

import torch

logger = logging.getLogger("find_syncs")
SITES: collections.Counter = collections.Counter()


def _record(message, category, filename, lineno, file=None, line=None) -> None:
    if "synchroniz" not in str(message):
        return
    frames = [f for f in traceback.extract_stack()[:-1] if "/rerankers/" in f.filename and "find_syncs" not in
              f.filename]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-4:]))
    SITES[f"{str(message).split(':')[0][:60]} @ {where or filename + ':' + str(lineno)}"] += 1


def _report(title: str) -> None:
    print(f"\n## {title}: {sum(SITES.values())} synchronising calls")
    for site, n in SITES.most_common():
        print(f"{n:5d}  {site}")
    SITES.clear()


def bench_steps(names, pairs: int, steps: int, device: torch.device) -> None:
    from rerankers.bench.build import build_model
    from rerankers.bench.systems import Ours, TrainStep
    from rerankers.bench.workload import model_workload, synthetic_batches

    for name in names:
        model, _ = build_model(name, init="random")
        model.to(device)
        batches = [b.to(device) for b in synthetic_batches(pairs, 2, seed=0, **model_workload(model))]
        step = TrainStep(Ours(name, "packed", model), device, 8, autocast=torch.bfloat16)
        step(batches[0])  # compile the kernels outside the count
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        for i in range(steps):
            step(batches[i % 2])
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        _report(f"bench TrainStep, {name} ours packed, {pairs} pairs, {steps} steps")
        del model, step, batches
        torch.cuda.empty_cache()


def loop_steps(steps: int) -> None:
    from rerankers.data.texts import read_corpus, read_queries
    from rerankers.data.trec import write_run
    from rerankers.pipeline import sample_data_dir
    from rerankers.retrieval import BM25Config, bm25_retrieve
    from rerankers.train.config import resolve_config
    from rerankers.train.loop import train
    from rerankers.train.tiny import save_tiny_backbone

    data = sample_data_dir()
    queries, docs = read_queries(data / "queries.tsv"), read_corpus(data / "collection.tsv")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_run(bm25_retrieve(docs, queries, k=30, config=BM25Config()), root / "bm25.trec", tag="bm25")
        for kind in ("mamba", "bert"):
            save_tiny_backbone(kind, root / kind, [*queries.values(), *docs.values()], seed=0)
            settings = dict(backbone=str(root / kind), out=str(root / f"run-{kind}"), train=[str(root / "bm25.trec")],
                            train_qrels=[str(data / "qrels.txt")], corpus=str(data / "collection.tsv"),
                            queries=str(data / "queries.tsv"), group_size=4, queries_per_step=4, lr=1e-4,
                            warmup_steps=2, max_steps=steps, log_every=steps, max_length=128, seed=1, device="cuda")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train(resolve_config(None, settings))
            finally:
                torch.cuda.set_sync_debug_mode("default")
            _report(f"rerank train's loop, tiny {kind}, {steps} steps (includes the run's set-up and the final save)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", nargs="+", default=["mamba-130m", "bert-base"])
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--no-loop", action="store_true", help="the bench's step only")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.showwarning = _record
    warnings.simplefilter("always")
    device = torch.device("cuda")
    bench_steps(args.backbone, args.pairs, args.steps, device)
    if not args.no_loop:
        loop_steps(max(args.steps, 4))


if __name__ == "__main__":
    main()

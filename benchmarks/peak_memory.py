"""What the peak of a training step holds, by the code that allocated it (GPU; seventh session, issue 13).

    PYTHONPATH=. python3 benchmarks/peak_memory.py --backbone mamba-130m --pairs 256 --modes packed recompute

For each mode, the bench's own training step (``rerank bench train``'s TrainStep: bf16 autocast, fused AdamW,
clipping) runs ``--steps`` times on MS MARCO-shaped random packs; the last step is recorded by the CUDA caching
allocator's history (``torch.cuda.memory._record_memory_history``). Replaying its alloc / free events gives the
moment of the peak and the blocks alive then; they are summed by the innermost frame of this package (or of torch
where none) that allocated them, and printed with the memory allocated after the forward and at the peak (MiB).
Nothing imports this file.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rerankers.bench.build import build_model  # noqa: E402
from rerankers.bench.systems import Ours, TrainStep  # noqa: E402
from rerankers.bench.workload import model_workload, synthetic_batches  # noqa: E402

MIB = 2 ** 20


def _site(frames: list[dict]) -> str:
    """The innermost frame of this package that allocated a block, else the innermost Python frame."""
    for f in frames:
        name = f.get("filename", "")
        if "/rerankers/" in name and "/bench/" not in name:
            return f"{name.split('/rerankers/')[-1]}:{f.get('line')} {f.get('name')}"
    for f in frames:
        if f.get("filename", "").endswith(".py"):
            return f"{f['filename'].split('/')[-1]}:{f.get('line')} {f.get('name')}"
    return "?"


def peak_blocks(snapshot: dict, device: int = 0) -> tuple[int, dict[str, int]]:
    """(peak bytes over the recorded events, bytes alive at that peak by allocation site)."""
    live: dict[int, tuple[int, str]] = {}
    for seg in snapshot["segments"]:  # blocks alive before the recording began count too (weights, optimizer)
        if seg.get("device", device) != device:
            continue
        addr = seg["address"]
        for b in seg["blocks"]:
            if b["state"] == "active_allocated":
                live.setdefault(addr, (b["size"], "allocated before the step"))
            addr += b["size"]
    events = snapshot["device_traces"][device]
    allocs = [e for e in events if e["action"] in ("alloc", "free_requested")]
    # alive at the start: alive at the end and never touched by the trace, or freed by it before any alloc there
    first: dict[int, dict] = {}
    for e in allocs:
        first.setdefault(e["addr"], e)
    start = {a: v for a, v in live.items() if a not in first}
    for a, e in first.items():
        if e["action"] == "free_requested":
            start[a] = (e["size"], "allocated before the step")
    cur = dict(start)
    total = sum(s for s, _ in cur.values())
    peak, at_peak = total, dict(cur)
    for e in allocs:
        if e["action"] == "alloc":
            cur[e["addr"]] = (e["size"], _site(e.get("frames", [])))
            total += e["size"]
            if total > peak:
                peak, at_peak = total, dict(cur)
        elif e["addr"] in cur:
            total -= cur.pop(e["addr"])[0]
    by_site: dict[str, int] = collections.Counter()
    for size, site in at_peak.values():
        by_site[site] += size
    return peak, dict(by_site)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="mamba-130m")
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--modes", nargs="+", default=["packed", "recompute"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=14)
    p.add_argument("--out", type=Path, default=None, help="a JSON file for the numbers")
    args = p.parse_args()
    device = torch.device("cuda")
    model, _ = build_model(args.backbone)
    model.to(device)
    batches = [b.to(device) for b in synthetic_batches(args.pairs, 2, seed=args.pairs, **model_workload(model))]
    report = {}
    for mode in args.modes:
        step = TrainStep(Ours(args.backbone, mode, model), device, 16, autocast=torch.bfloat16)
        for i in range(args.steps - 1):
            step(batches[i % 2])
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.memory._record_memory_history(max_entries=1_000_000)
        step(batches[0])
        torch.cuda.synchronize()
        snap = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        peak, sites = peak_blocks(snap)
        top = sorted(sites.items(), key=lambda kv: -kv[1])[:args.top]
        report[mode] = {"max_memory_allocated_mib": torch.cuda.max_memory_allocated() / MIB,
                        "replayed_peak_mib": peak / MIB, "at_peak_mib": {k: v / MIB for k, v in top}}
        print(f"== {args.backbone} {mode}: max_memory_allocated {report[mode]['max_memory_allocated_mib']:.0f} MiB, "
              f"replayed peak {peak / MIB:.0f} MiB; alive at the peak by site:")
        for site, size in top:
            print(f"  {size / MIB:10.1f}  {site}")
        del step
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

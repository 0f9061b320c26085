"""Backbone throughput on the GPU: training steps and inference, packed vs padded, Mamba vs BERT.

Reproduces the rows of DESIGN.md's "measured anchors" with our own code on one card: batches of
MS MARCO-shaped (query ~10 + passage ~76 tokens, max 256) pairs, bf16 autocast over fp32 weights
(the training recipe), a scalar loss on the pooled states, forward + backward. Reported: real
(unpadded) tokens/s and pairs/s, median over timed steps after warm-up (llm.c style: synchronise,
drop warm-up, median of the rest), and peak memory.

Correctness first: before timing, each packed backbone is checked in bf16 against an fp32 oracle
on fresh random inputs (Mamba: the pure-PyTorch reference path; BERT: padded SDPA per sequence).

Run on the device machine (GPU image: torch 2.11, Triton 3.6, transformers 5.x):

    PYTHONPATH=. python benchmarks/bench_models.py [--pairs 64 256] [--systems mamba-130m bert-base ...]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from rerankers.data.packing import PackedBatch
from rerankers.kernels.varlen import cu_seqlens_from_lengths, position_ids_from_cu_seqlens

log = logging.getLogger("bench_models")


MAMBA_SHAPES = {"mamba-130m": (768, 24), "mamba-370m": (1024, 48), "mamba-790m": (1536, 48),
                "mamba-tiny": (64, 2)}  # tiny: CPU smoke runs of this script only
BERT_SHAPES = {"bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                 intermediate_size=3072),
               "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                  intermediate_size=4096),
               "bert-tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)}


def msmarco_lengths(n: int, gen: torch.Generator) -> list[int]:
    """n pair lengths shaped like MS MARCO (query ~10, passage ~76 tokens, template 3; max 256)."""
    q = torch.randint(5, 16, (n,), generator=gen)
    p = (torch.randn(n, generator=gen) * 30 + 76).round().clamp(20, 240).long()
    return (q + p + 3).clamp(max=256).tolist()


def make_batch(lengths: list[int], vocab: int, gen: torch.Generator, device: str,
               token_types: bool = False) -> PackedBatch:
    """A PackedBatch of random ids with the given lengths (token types: query part 0, rest 1)."""
    cu = cu_seqlens_from_lengths(lengths)
    ids = torch.randint(1, vocab, (int(cu[-1]),), generator=gen)
    tt = None
    if token_types:
        pos = position_ids_from_cu_seqlens(cu)
        tt = (pos >= 12).long()
    batch = PackedBatch(input_ids=ids, cu_seqlens=cu, max_seqlen=max(lengths),
                        position_ids=position_ids_from_cu_seqlens(cu), token_type_ids=tt)
    return batch.to(device)


def padded_as_packed(batch: PackedBatch) -> PackedBatch:
    """The same pairs as a padded batch seen by a packed kernel: every row has max_seqlen tokens."""
    S, L = batch.num_sequences, batch.max_seqlen
    ids, _, tt = batch.to_padded()
    cu = cu_seqlens_from_lengths([L] * S).to(ids.device)
    return PackedBatch(input_ids=ids.reshape(-1), cu_seqlens=cu, max_seqlen=L,
                       position_ids=position_ids_from_cu_seqlens(cu),
                       token_type_ids=None if tt is None else tt.reshape(-1))


# ---------------------------------------------------------------------------------------- models
def build_mamba(name: str, device: str):
    from rerankers.models.mamba import MambaBackbone
    from rerankers.models.mamba_config import MambaConfig
    d, n = MAMBA_SHAPES[name]
    torch.manual_seed(0)
    return MambaBackbone(MambaConfig(d_model=d, n_layer=n, vocab_size=50280)).to(device)


def build_bert(name: str, device: str):
    from transformers import BertConfig

    from rerankers.models.bert import BertBackbone
    torch.manual_seed(0)
    cfg = BertConfig(**BERT_SHAPES[name], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertBackbone.from_config(cfg).to(device)


def pooled_fn(model, kind: str, mode: str) -> Callable[[PackedBatch], torch.Tensor]:
    """batch -> pooled (S, H): 'packed' through the varlen path, 'padded' through a padded batch."""
    if kind == "mamba":
        def packed(b):
            return model(b).index_select(0, b.last_token_index)
        if mode == "packed":
            return packed
        return lambda b: packed(padded_as_packed(b))  # pads after each sequence: the padded cost

    def bert_packed(b):
        return model(b).index_select(0, b.first_token_index)

    def bert_padded(b):
        ids, mask, tt = b.to_padded()
        return model.forward_padded(ids, mask, tt)[:, 0]
    return bert_packed if mode == "packed" else bert_padded


# ---------------------------------------------------------------------------------------- checks
def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def check(name: str, device: str, gen: torch.Generator) -> dict:
    """bf16 autocast packed vs the fp32 oracle, on fresh random pairs; NaN never passes."""
    lengths = msmarco_lengths(16, gen)
    if name.startswith("mamba"):
        model = build_mamba(name, device).eval()
        batch = make_batch(lengths, 50280, gen, device)
        with torch.no_grad():
            model.kernel_backend = "reference"
            ref = model(batch).float()
            model.kernel_backend = None
            fp32 = model(batch).float()
            with torch.autocast(batch.input_ids.device.type, dtype=torch.bfloat16):
                bf16 = model(batch).float()
    else:
        model = build_bert(name, device).eval()
        batch = make_batch(lengths, 30522, gen, device, token_types=True)
        with torch.no_grad():
            ids, mask, tt = batch.to_padded()
            padded = model.forward_padded(ids, mask, tt).float()
            ref = padded[mask.bool()]
            fp32 = model(batch).float()
            with torch.autocast(batch.input_ids.device.type, dtype=torch.bfloat16):
                bf16 = model(batch).float()
    out = {"system": name, "fp32_rel_err": rel_err(fp32, ref), "bf16_rel_err": rel_err(bf16, ref),
           "nan": bool(torch.isnan(bf16).any() or torch.isnan(fp32).any())}
    ok = not out["nan"] and out["fp32_rel_err"] < 1e-3 and out["bf16_rel_err"] < 3e-2
    out["ok"] = ok
    del model
    _empty_cache()
    return out


# ---------------------------------------------------------------------------------------- timing
@dataclass
class Row:
    system: str
    mode: str
    step: str
    pairs: int
    real_tokens: int
    padded_tokens: int
    ms: float
    real_tokens_per_s: float
    pairs_per_s: float
    peak_gib: float


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def time_steps(fn: Callable[[], None], warmup: int, steps: int) -> float:
    """Median seconds of ``steps`` timed calls after ``warmup`` untimed ones (synchronised)."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_steps(name: str, mode: str, n_pairs: int, device: str, gen: torch.Generator):
    """(model, batches, train_step, infer_step) for one system, mode and batch size."""
    kind = "mamba" if name.startswith("mamba") else "bert"
    model = build_mamba(name, device) if kind == "mamba" else build_bert(name, device)
    pooled = pooled_fn(model, kind, mode)
    head = torch.nn.Linear(model.hidden_size, 1).to(device)
    vocab = 50280 if kind == "mamba" else 30522
    batches = [make_batch(msmarco_lengths(n_pairs, gen), vocab, gen, device, token_types=kind == "bert")
               for _ in range(4)]  # rotate among input sets
    params = list(model.parameters()) + list(head.parameters())
    it = iter(range(10 ** 9))

    def train_step():
        b = batches[next(it) % len(batches)]
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            scores = head(pooled(b)).float().squeeze(-1)
        # a listwise softmax loss over groups of 8 (1 positive + 7 negatives), as LCE
        loss = torch.nn.functional.cross_entropy(scores.view(-1, 8), torch.zeros(scores.numel() // 8,
                                                 dtype=torch.long, device=device))
        loss.backward()
        for p in params:
            p.grad = None

    @torch.no_grad()
    def infer_step():
        b = batches[next(it) % len(batches)]
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            head(pooled(b))
    return model, batches, train_step, infer_step


def bench(name: str, mode: str, n_pairs: int, device: str, gen: torch.Generator,
          warmup: int, steps: int) -> list[Row]:
    model, batches, train_step, infer_step = make_steps(name, mode, n_pairs, device, gen)
    rows = []
    for step, fn in (("train", train_step), ("infer", infer_step)):
        model.train(step == "train")
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        sec = time_steps(fn, warmup, steps)
        real = statistics.mean(b.num_tokens for b in batches)
        padded = statistics.mean(b.num_sequences * b.max_seqlen for b in batches)
        rows.append(Row(name, mode, step, n_pairs, int(real), int(padded), sec * 1e3, real / sec,
                        n_pairs / sec,
                        torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else float("nan")))
    return rows  # the caller empties the cache once the model and batches are released


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", nargs="+", default=["mamba-130m", "mamba-370m", "bert-base", "bert-large"])
    ap.add_argument("--modes", nargs="+", default=["packed", "padded"])
    ap.add_argument("--pairs", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--device", default="cuda", help="cuda (numbers to report) or cpu (a smoke run only)")
    ap.add_argument("--profile", default=None, metavar="SYSTEM:PAIRS",
                    help="after timing, profile one packed training step of SYSTEM at PAIRS pairs (GPU only)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = args.device
    os.makedirs(args.out, exist_ok=True)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_models: no CUDA GPU (use --device cpu for a smoke run)")
    card = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu (smoke run, not a benchmark)"
    gen = torch.Generator().manual_seed(1234)
    print(f"card: {card}; torch {torch.__version__}")

    checks = [check(s, device, gen) for s in args.systems]
    for c in checks:
        print(f"check {c['system']:12s} fp32 rel err {c['fp32_rel_err']:.2e}  bf16 rel err {c['bf16_rel_err']:.2e}"
              f"  nan={c['nan']}  {'OK' if c['ok'] else 'FAILED'}")
    if not all(c["ok"] for c in checks):
        raise SystemExit("correctness check failed: not timing")

    # Each row is printed and saved as soon as it is measured: a later failure loses nothing.
    rows: list[Row] = []
    skipped: list[str] = []
    print(f"\n| system | mode | step | pairs | real tok | padded tok | ms | real tok/s | pairs/s | peak GiB |  ({card})")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for s in args.systems:
        for mode in args.modes:
            for n in args.pairs:
                try:
                    new = bench(s, mode, n, device, gen, args.warmup, args.steps)
                    _empty_cache()
                except torch.OutOfMemoryError:
                    _empty_cache()
                    skipped.append(f"{s}/{mode}/{n}: out of memory")
                    print(f"| {s} | {mode} | - | {n} | out of memory |", flush=True)
                    continue
                rows += new
                for r in new:
                    print(f"| {r.system} | {r.mode} | {r.step} | {r.pairs} | {r.real_tokens} | {r.padded_tokens} "
                          f"| {r.ms:.2f} | {r.real_tokens_per_s:,.0f} | {r.pairs_per_s:,.0f} | {r.peak_gib:.2f} |",
                          flush=True)
                with open(os.path.join(args.out, "bench_models.json"), "w") as f:
                    json.dump({"card": card, "torch": torch.__version__, "checks": checks, "skipped": skipped,
                               "rows": [asdict(r) for r in rows]}, f, indent=1)
    if args.profile:
        profile_step(args.profile, device, gen, args.out)


def profile_step(spec: str, device: str, gen: torch.Generator, out: str) -> None:
    """Profile one packed training step of ``system:pairs`` and write the GPU-time table to ``out``."""
    from torch.profiler import ProfilerActivity, profile
    name, pairs = spec.split(":")
    model, batches, train_step, _ = make_steps(name, "packed", int(pairs), device, gen)
    model.train()
    for _ in range(3):
        train_step()
    _sync()
    cuda = device.startswith("cuda")
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(3):
            train_step()
        _sync()
    table = prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=40,
                                      max_name_column_width=70)
    path = os.path.join(out, f"profile_{name}_{pairs}.txt")
    with open(path, "w") as f:
        f.write(f"{name} packed train step x3, {pairs} pairs, "
                f"{torch.cuda.get_device_name() if cuda else 'cpu'}\n{table}\n")
    log.info("profile written to %s\n%s", path, table)


if __name__ == "__main__":
    main()

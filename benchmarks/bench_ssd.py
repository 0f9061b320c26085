"""Mamba-2's SSD scan and backbone on the GPU: checks first, then timings.

1. Checks (CUDA): the chunked varlen SSD against the recurrent reference on a ragged pack (fp32 and
   fp64: output and every gradient by name), bf16 inputs against the fp32 reference; where mamba_ssm's
   Triton SSD can be imported (``--mamba-ssm DIR``: an unpacked pure-Python mamba_ssm wheel, see
   benchmarks/KERNEL_NOTES.md), ours against ``mamba_chunk_scan_combined`` with ``seq_idx``.
2. The scan alone at mamba2-130m's shape (24 heads of 64, d_state 128, one group), bf16 inputs, on
   MS MARCO-shaped packs: forward + backward time and peak memory, ours at several chunk sizes and
   mamba_ssm's Triton SSD where available.
3. A Mamba-2 backbone training step (130m shape, random weights, bf16 autocast over fp32 weights,
   LCE-like loss over groups of 8): real tokens/s, beside Mamba-1's 130m shape in the same run.

    PYTHONPATH=. python benchmarks/bench_ssd.py [--mamba-ssm DIR] [--pairs 64 256] [--out DIR]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import types

import torch

from rerankers.bench.timing import time_calls
from rerankers.bench.workload import msmarco_lengths
from rerankers.data.packing import PackedBatch
from rerankers.kernels import ssd_chunked_varlen, ssd_ref_varlen
from rerankers.kernels.varlen import cu_seqlens_from_lengths, position_ids_from_cu_seqlens, sequence_ids

log = logging.getLogger("bench_ssd")
NAMES = ("x", "dt", "A", "B", "C", "D", "dt_bias")


def import_mamba_chunk_scan(folder: str | None):
    """mamba_ssm's Triton ``mamba_chunk_scan_combined`` without running mamba_ssm/__init__.py (which imports
    the CUDA extension selective_scan_cuda in releases up to 2.3.2.post1); None where it cannot be imported."""
    if folder:
        sys.path.insert(0, folder)
    spec = importlib.util.find_spec("mamba_ssm")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = types.ModuleType("mamba_ssm")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("mamba_ssm", package)
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as e:  # noqa: BLE001 - report and go on without it
        log.warning("mamba_ssm's Triton SSD not importable: %s: %s", type(e).__name__, e)
        return None
    return mamba_chunk_scan_combined


def inputs(lengths, H, P, G, N, dtype, device, seed=0, grad=True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    r = lambda *s: torch.randn(*s, generator=g)
    xs = {"x": r(T, H, P), "dt": 0.5 * r(T, H) - 1.0, "A": -torch.exp(torch.rand(H, generator=g) * 2.7),
          "B": r(T, G, N) / N ** 0.5, "C": r(T, G, N) / N ** 0.5, "D": r(H), "dt_bias": 0.3 * r(H)}
    return {k: v.to(device=device, dtype=dtype).requires_grad_(grad) for k, v in xs.items()}


def run(fn, xs, cu, w):
    y = fn(xs, cu)
    grads = torch.autograd.grad((y.float() * w).sum(), list(xs.values()))
    return {"y": y, **{f"d{k}": g for k, g in zip(xs, grads)}}


def rel(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def ours(chunk: int):
    return lambda xs, cu: ssd_chunked_varlen(**xs, cu_seqlens=cu, chunk_size=chunk)


def theirs(scan, chunk: int):
    """mamba_chunk_scan_combined on the pack as one (1, T) row, sequences told apart by seq_idx."""
    def fn(xs, cu):
        seq_idx = sequence_ids(cu, xs["x"].shape[0]).to(torch.int32)[None]
        return scan(xs["x"][None], xs["dt"][None], xs["A"], xs["B"][None], xs["C"][None], chunk, D=xs["D"],
                    dt_bias=xs["dt_bias"], dt_softplus=True, seq_idx=seq_idx)[0]
    return fn


def checks(scan, device: str) -> dict:
    lengths = [1, 63, 64, 65, 200, 3, 130, 17]
    cu = cu_seqlens_from_lengths(lengths, device=device)
    H, P, G, N = 8, 16, 2, 32
    out = {}
    for dtype in (torch.float64, torch.float32):
        xs = inputs(lengths, H, P, G, N, dtype, device)
        w = torch.randn(sum(lengths), H, P, device=device)
        ref = run(lambda a, c: ssd_ref_varlen(**a, cu_seqlens=c), xs, cu, w)
        got = run(ours(64), xs, cu, w)
        out[f"chunked_vs_reference_{str(dtype)[6:]}"] = {k: rel(got[k], ref[k]) for k in ref}
        if dtype == torch.float32:
            ref32, xs32 = ref, xs
    bf = {k: v.detach().bfloat16().requires_grad_() for k, v in xs32.items()}
    out["chunked_bf16_vs_reference_fp32"] = {k: rel(v, ref32[k]) for k, v in run(ours(64), bf, cu, w).items()}
    if scan is not None:
        for label, xs_ in (("fp32", xs32), ("bf16", bf)):
            got = run(theirs(scan, 64), xs_, cu, w)
            out[f"mamba_ssm_{label}_vs_reference_fp32"] = {k: rel(v, ref32[k]) for k, v in got.items()}
    out["backbone_auto_vs_reference_fp32"] = check_backbone(device)
    for name, errs in out.items():
        log.info("check %-36s %s", name, " ".join(f"{k}={v:.1e}" for k, v in errs.items()))
    return out


def check_backbone(device: str) -> dict:
    """A small Mamba-2 backbone (Triton conv + chunked SSD on CUDA) against its reference path (reference
    conv + recurrent SSD), fp32: hidden states and the largest gradient error over the parameters."""
    from rerankers.models.mamba2 import Mamba2Backbone, Mamba2Config

    torch.manual_seed(0)
    model = Mamba2Backbone(Mamba2Config(d_model=64, n_layer=2, vocab_size=100, d_state=16, headdim=16, ngroups=2,
                                        chunk_size=8, bias=True)).to(device)
    lengths = [5, 1, 17, 9, 8, 40]
    cu = cu_seqlens_from_lengths(lengths)
    batch = PackedBatch(input_ids=torch.randint(0, 100, (int(cu[-1]),)), cu_seqlens=cu, max_seqlen=max(lengths),
                        position_ids=position_ids_from_cu_seqlens(cu)).to(device)
    w = torch.randn(batch.num_tokens, 64, device=device)  # a loss whose gradient does not cancel in the norm
    results = {}
    for backend in (None, "reference"):
        model.kernel_backend = backend
        model.zero_grad()
        h = model(batch)
        (h * w).sum().backward()
        results[backend] = (h.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    (h0, g0), (h1, g1) = results[None], results["reference"]
    return {"hidden": rel(h0, h1), "max_param_grad": max(rel(g0[n], g1[n]) for n in g1)}


def time_scan(scan, pairs: list[int], device: str, steps: int) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(1)
    for n in pairs:
        lengths = msmarco_lengths(n, gen)
        cu = cu_seqlens_from_lengths(lengths, device=device)
        xs = inputs(lengths, 24, 64, 1, 128, torch.bfloat16, device)
        w = torch.randn(sum(lengths), 24, 64, device=device)
        systems = [(f"ours chunk {q}", ours(q)) for q in (64, 128, 256)]
        if scan is not None:
            systems.append(("mamba_ssm triton chunk 256", theirs(scan, 256)))
        for name, fn in systems:
            torch.cuda.reset_peak_memory_stats()
            sec = time_calls(lambda _i: run(fn, xs, cu, w), torch.device(device), warmup=3,
                             repeats=steps).step_s
            row = {"system": name, "pairs": n, "tokens": sum(lengths), "fwd_bwd_ms": sec * 1e3,
                   "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30}
            log.info("scan %-28s pairs=%4d T=%6d  fwd+bwd %8.2f ms  peak %.2f GiB", name, n, row["tokens"],
                     row["fwd_bwd_ms"], row["peak_gib"])
            rows.append(row)
    return rows


def time_backbones(pairs: list[int], device: str, steps: int) -> list[dict]:
    from rerankers.models.mamba import MambaBackbone, MambaConfig
    from rerankers.models.mamba2 import Mamba2Backbone, Mamba2Config

    builds = {"mamba2-130m": lambda: Mamba2Backbone(Mamba2Config(d_model=768, n_layer=24, vocab_size=50277,
                                                                 pad_vocab_size_multiple=16)),
              "mamba-130m": lambda: MambaBackbone(MambaConfig(d_model=768, n_layer=24, vocab_size=50277))}
    rows = []
    for name, build in builds.items():
        torch.manual_seed(0)
        rows += time_training(name, build().to(device).train(), pairs, device, steps)
        torch.cuda.empty_cache()
    return rows


def time_training(name: str, model, pairs: list[int], device: str, steps: int) -> list[dict]:
    head = torch.nn.Linear(model.hidden_size, 1).to(device)
    gen = torch.Generator().manual_seed(2)
    rows = []
    for n in pairs:
        lengths = msmarco_lengths(n, gen)
        cu = cu_seqlens_from_lengths(lengths)
        batch = PackedBatch(input_ids=torch.randint(1, 50277, (int(cu[-1]),), generator=gen), cu_seqlens=cu,
                            max_seqlen=max(lengths), position_ids=position_ids_from_cu_seqlens(cu)).to(device)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                scores = head(model(batch).index_select(0, batch.last_token_index)).float().view(-1, 8)
            loss = torch.nn.functional.cross_entropy(scores, torch.zeros(n // 8, dtype=torch.long, device=device))
            loss.backward()
            for p in (*model.parameters(), *head.parameters()):
                p.grad = None

        torch.cuda.reset_peak_memory_stats()
        sec = time_calls(lambda _i: step(), torch.device(device), warmup=2, repeats=steps).step_s
        row = {"system": name, "pairs": n, "tokens": batch.num_tokens, "step_ms": sec * 1e3,
               "tokens_per_s": batch.num_tokens / sec, "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30}
        log.info("train %-12s pairs=%4d T=%6d  step %8.1f ms  %9.0f tokens/s  peak %.1f GiB", name, n,
                 row["tokens"], row["step_ms"], row["tokens_per_s"], row["peak_gib"])
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mamba-ssm", default=None, help="folder holding an unpacked mamba_ssm (pure-Python wheel)")
    ap.add_argument("--pairs", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--skip-backbones", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = "cuda"
    log.info("%s, torch %s", torch.cuda.get_device_name(), torch.__version__)
    scan = import_mamba_chunk_scan(args.mamba_ssm)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "checks": checks(scan, device),
              "scan": time_scan(scan, args.pairs, device, args.steps)}
    if not args.skip_backbones:
        result["backbones"] = time_backbones(args.pairs, device, args.steps)
    with open(os.path.join(args.out, "bench_ssd.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

"""The Triton varlen SSD (``ssd_varlen(..., backend="triton")``) on the GPU: checks first, then timings.

1. Checks (CUDA, compiled kernels, not the interpreter): on a ragged pack (lengths 1, 63, 64, 65, 200, ...)
   against the recurrent reference, fp32 inputs (output and every gradient by name, both backwards, chunk
   lengths 16 and 64) and bf16 inputs against the fp32 reference; exactly zero gradient across sequences;
   at mamba2-130m's shape (24 heads of 64, d_state 128), bf16, against the chunked form.
2. The scan alone at mamba2-130m's shape, bf16, MS MARCO-shaped packs: forward-only and forward + backward
   time and peak memory for the chunked form (the CPU path), the Triton forward + Triton backward (the GPU default)
   at several chunk lengths, the Triton forward + chunked recompute backward, and mamba_ssm's Triton SSD
   where ``--mamba-ssm DIR`` imports it (benchmarks/KERNEL_NOTES.md, Mamba-2).

    PYTHONPATH=. python benchmarks/bench_ssd_triton.py [--mamba-ssm DIR] [--pairs 64 256] [--chunks 16 32 64 128]
        [--warps-fwd 4] [--warps-bwd 8] [--out DIR]

Writes bench_ssd_triton.json under --out ($OUT by default). Exits 1 if a check fails.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ssd import import_mamba_chunk_scan, inputs, rel, run, theirs  # noqa: E402

from rerankers.bench.timing import time_calls  # noqa: E402
from rerankers.bench.workload import msmarco_lengths  # noqa: E402
from rerankers.kernels import ssd_chunked_varlen, ssd_ref_varlen  # noqa: E402
from rerankers.kernels.ssd import op  # noqa: E402
from rerankers.kernels.varlen import cu_seqlens_from_lengths  # noqa: E402

log = logging.getLogger("bench_ssd_triton")
TOL = {"fp32": 5e-5, "bf16": 2e-2, "bf16_vs_chunked": 2e-2}


def triton(chunk: int, backward: str = "triton"):
    def fn(xs, cu):
        op.MAX_CHUNK = max(op.MAX_CHUNK, chunk)
        return op.ssd_triton_varlen(**xs, cu_seqlens=cu, chunk_size=chunk, backward=backward)
    return fn


def chunked(chunk: int):
    return lambda xs, cu: ssd_chunked_varlen(**xs, cu_seqlens=cu, chunk_size=chunk)


def checks(device: str) -> tuple[dict, bool]:
    lengths = [1, 63, 64, 65, 200, 3, 130, 17, 0, 16, 15]
    cu = cu_seqlens_from_lengths(lengths, device=device)
    out, ok = {}, True
    xs = inputs(lengths, 8, 16, 2, 32, torch.float32, device)
    w = torch.randn(sum(lengths), 8, 16, device=device)
    ref = run(lambda a, c: ssd_ref_varlen(**a, cu_seqlens=c), xs, cu, w)
    bf = {k: v.detach().bfloat16().requires_grad_() for k, v in xs.items()}
    for q in (16, 64):
        for backward in op.BACKWARDS:
            for label, xs_ in (("fp32", xs), ("bf16", bf)):
                errs = {k: rel(v, ref[k]) for k, v in run(triton(q, backward), xs_, cu, w).items()}
                out[f"triton_q{q}_{backward}_bwd_{label}_vs_reference_fp32"] = errs
                ok &= max(errs.values()) < TOL[label]
    # a loss on one sequence: exactly zero gradient elsewhere
    lo, hi = int(cu[4]), int(cu[5])
    y = triton(16)(xs, cu)
    grads = torch.autograd.grad((y[lo:hi] ** 2).sum(), [xs[k] for k in ("x", "dt", "B", "C")])
    leak = sum(int(torch.count_nonzero(torch.cat([g[:lo], g[hi:]]))) for g in grads)
    out["cross_sequence_nonzero_gradients"] = {"count": leak}
    ok &= leak == 0
    # mamba2-130m shape, bf16: against the chunked form on the same inputs
    gen = torch.Generator().manual_seed(3)
    big = msmarco_lengths(16, gen)
    cub = cu_seqlens_from_lengths(big, device=device)
    xb = inputs(big, 24, 64, 1, 128, torch.bfloat16, device)
    wb = torch.randn(sum(big), 24, 64, device=device)
    base = run(chunked(64), xb, cub, wb)
    for q in (16, 64):
        errs = {k: rel(v, base[k]) for k, v in run(triton(q), xb, cub, wb).items()}
        out[f"triton_q{q}_130m_shape_bf16_vs_chunked_bf16"] = errs
        ok &= max(errs.values()) < TOL["bf16_vs_chunked"]
    for name, errs in out.items():
        log.info("check %-52s %s", name, " ".join(f"{k}={v:.1e}" for k, v in errs.items()))
    return out, ok


def time_scan(scan, pairs: list[int], chunks: list[int], device: str, steps: int) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(1)
    for n in pairs:
        lengths = msmarco_lengths(n, gen)
        cu = cu_seqlens_from_lengths(lengths, device=device)
        xs = inputs(lengths, 24, 64, 1, 128, torch.bfloat16, device)
        w = torch.randn(sum(lengths), 24, 64, device=device)
        systems = [("chunked q64", chunked(64)), ("chunked q256", chunked(256))]
        systems += [(f"triton q{q}", triton(q)) for q in chunks]
        systems.append((f"triton q{chunks[0]} + chunked bwd", triton(chunks[0], "chunked")))
        if scan is not None:
            systems.append(("mamba_ssm triton q256", theirs(scan, 256)))
        for name, fn in systems:
            try:
                with torch.no_grad():
                    fwd = time_calls(lambda _i: fn(xs, cu), torch.device(device), warmup=3, repeats=steps)
                both = time_calls(lambda _i: run(fn, xs, cu, w), torch.device(device), warmup=3, repeats=steps)
            except Exception as e:  # noqa: BLE001 - e.g. out of shared memory at a large chunk: report, go on
                log.warning("scan %-32s failed: %s: %s", name, type(e).__name__, str(e)[:300])
                rows.append({"system": name, "pairs": n, "error": f"{type(e).__name__}: {str(e)[:300]}"})
                continue
            row = {"system": name, "pairs": n, "tokens": sum(lengths), "fwd_ms": fwd.step_s * 1e3,
                   "fwd_peak_gib": fwd.peak_memory_gib, "fwd_bwd_ms": both.step_s * 1e3,
                   "fwd_bwd_peak_gib": both.peak_memory_gib}
            log.info("scan %-32s pairs=%4d T=%6d  fwd %7.2f ms (%.2f GiB)  fwd+bwd %7.2f ms (%.2f GiB)", name, n,
                     row["tokens"], row["fwd_ms"], row["fwd_peak_gib"], row["fwd_bwd_ms"], row["fwd_bwd_peak_gib"])
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mamba-ssm", default=None, help="folder holding an unpacked mamba_ssm (pure-Python wheel)")
    ap.add_argument("--pairs", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--chunks", nargs="+", type=int, default=[16, 32, 64, 128])
    ap.add_argument("--warps-fwd", type=int, default=op.WARPS["fwd"])
    ap.add_argument("--warps-bwd", type=int, default=op.WARPS["bwd"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    op.WARPS.update(fwd=args.warps_fwd, bwd=args.warps_bwd)
    device = "cuda"
    log.info("%s, torch %s, warps %s", torch.cuda.get_device_name(), torch.__version__, op.WARPS)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "warps": dict(op.WARPS)}
    result["checks"], ok = checks(device)
    log.info("checks %s", "passed" if ok else "FAILED")
    if not args.skip_timing:
        scan = import_mamba_chunk_scan(args.mamba_ssm)
        result["scan"] = time_scan(scan, args.pairs, args.chunks, device, args.steps)
    with open(os.path.join(args.out, "bench_ssd_triton.json"), "w") as f:
        json.dump(result, f, indent=2)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""GPU benchmark of the varlen Mamba-1 kernels: correctness first, then timings.

    PYTHONPATH=. python benchmarks/bench_kernels.py [--out DIR] [--mamba-ext DIR] [--skip-check]

1. Correctness at full shapes: bf16 inputs through the Triton kernels against the fp32 PyTorch
   reference on the same (upcast) inputs, output and every gradient, fresh random inputs per
   check, outputs poisoned (NaN-filled allocator) so an unwritten element shows as NaN; an fp32
   check; torch.compile (aot_eager, fullgraph) through both custom ops.
2. Timings (triton.testing.do_bench median, 3 rotating input sets): forward and forward+backward
   of the scan over MS MARCO-shaped packs and long sequences, D in {1536, 2048}, N = 16; the
   same pairs as a padded batch through the same kernel; the PyTorch reference (small T); the
   conv1d against the scan; mamba-ssm's CUDA scan where its extension is importable
   (``--mamba-ext``: folder holding a built ``selective_scan_cuda``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import astuple, replace

import torch
import triton
from triton.testing import do_bench

from rerankers.kernels import (
    add_rmsnorm_ref,
    causal_conv1d_ref_varlen,
    causal_conv1d_varlen,
    selective_scan_ref_varlen,
    triton_utils,
)
from rerankers.kernels.add_rmsnorm.op import NormConfig, add_rmsnorm_triton
from rerankers.kernels.causal_conv1d.op import DEFAULT_CONFIG as CONV_DEFAULT_CONFIG
from rerankers.kernels.causal_conv1d.op import ConvConfig, causal_conv1d_triton
from rerankers.kernels.selective_scan.op import (
    DEFAULT_CONFIG,
    ScanConfig,
    launch_backward,
    launch_forward,
    pick_window,
    selective_scan_triton,
)
from rerankers.kernels.varlen import cu_seqlens_from_lengths

DEV = "cuda"
CFG: ScanConfig | None = None  # tile config used by checks and the sweep (None: the default)
RESULTS: dict = {"checks": [], "timings": [], "configs": [], "conv": [], "mamba": [], "addnorm": [], "recompute": [],
                 "log_s": [], "waves": []}


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------------
# inputs
def msmarco_lengths(gen: torch.Generator, total: int) -> list[int]:
    """Pair lengths like 'query ~10 + passage ~70 + template', mean ~90, max 256; summing to total."""
    out, s = [], 0
    while s < total:
        q = int(torch.randint(4, 17, (1,), generator=gen))
        p = int(torch.clamp(torch.normal(torch.tensor(76.0), torch.tensor(30.0), generator=gen), 16, 240))
        n = min(q + p + 4, 256, total - s)
        out.append(n)
        s += n
    return out


def cu_of(lengths: list[int]) -> torch.Tensor:
    return cu_seqlens_from_lengths(lengths, device=DEV)


Tiles = tuple[tuple[int, int, int], tuple[int, int, int]]  # (rows per chunk, warps, row blocks aimed at) fwd, bwd


def conv_config(tiles: Tiles) -> ConvConfig:
    return ConvConfig(*tiles[0], *tiles[1])


def conv_tiles(cfg: ConvConfig) -> Tiles:
    t = astuple(cfg)
    return t[:3], t[3:]


def scan_inputs(T: int, D: int, N: int, dtype=torch.bfloat16, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator(device=DEV).manual_seed(seed)
    r = lambda *s: torch.randn(*s, device=DEV, generator=g)
    u, delta, z = r(T, D).to(dtype), (0.5 * r(T, D)).to(dtype), r(T, D).to(dtype)
    B, C = r(T, N).to(dtype), r(T, N).to(dtype)
    A = -torch.exp(torch.rand(D, N, device=DEV, generator=g) * math.log(16.0))
    Dp = r(D)
    dt0 = torch.exp(torch.rand(D, device=DEV, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    bias = dt0 + torch.log(-torch.expm1(-dt0))  # softplus^-1
    return [u, delta, A, B, C, Dp, z, bias]


def poison(nbytes: int) -> None:
    """Fill the caching allocator's free memory with NaN so unwritten outputs show up."""
    torch.empty(nbytes // 4, dtype=torch.float32, device=DEV).fill_(float("nan"))
    torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------
# correctness
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


@torch.no_grad()
def compare(name: str, got: torch.Tensor, ref: torch.Tensor, rtol=3e-2, atol=5e-2) -> dict:
    got, ref = got.detach().float(), ref.detach().float()
    nan = bool(torch.isnan(got).any())
    rel = float((got - ref).norm() / ref.norm().clamp_min(1e-30))
    close = bool(torch.allclose(got, ref, rtol=rtol, atol=atol)) and not nan
    frac = float((~torch.isclose(got, ref, rtol=rtol, atol=atol)).float().mean())
    return dict(name=name, nan=nan, rel_norm_err=rel, allclose=close, frac_outside=frac)


def check_scan(tag: str, lengths: list[int], D: int, N: int = 16, dtype=torch.bfloat16, seed: int = 1,
               cfg: ScanConfig | None = None) -> bool:
    T = sum(lengths)
    cu = cu_of(lengths)
    xs = scan_inputs(T, D, N, dtype, seed)
    leaves = [x.detach().clone().requires_grad_() for x in xs]
    ref_leaves = [x.detach().float().clone().requires_grad_() for x in xs]
    poison(12 * T * D * 4)
    y = selective_scan_triton(*leaves, cu, config=cfg or CFG)
    g = torch.randn(y.shape, device=DEV, dtype=torch.float32).to(y.dtype)
    poison(12 * T * D * 4)
    grads = torch.autograd.grad(y, leaves, g)
    yr = selective_scan_ref_varlen(*ref_leaves, cu)
    grads_r = torch.autograd.grad(yr, ref_leaves, g.float())
    rows = [compare("y", y, yr)] + [compare("d" + n, a, b) for n, a, b in zip(NAMES, grads, grads_r)]
    ok = True
    for r in rows:
        # per-token tensors: elementwise rtol/atol; reduced parameters (sums over T): norm-wise 1e-2
        reduced = r["name"] in ("dA", "dD", "ddelta_bias")
        r_ok = (not r["nan"]) and (r["rel_norm_err"] <= (1e-2 if reduced else 3e-2)) and (reduced or r["allclose"])
        if dtype == torch.float32:
            r_ok = (not r["nan"]) and r["rel_norm_err"] <= 1e-4
        r["ok"] = r_ok
        ok &= r_ok
    RESULTS["checks"].append(dict(tag=tag, T=T, D=D, S=len(lengths), dtype=str(dtype), ok=ok, rows=rows))
    log(f"check {tag:28s} T={T:6d} D={D} S={len(lengths):4d} {str(dtype):15s} {'PASS' if ok else 'FAIL'}  " +
        " ".join(f"{r['name']}:{r['rel_norm_err']:.1e}{'' if r['ok'] else '!'}" for r in rows))
    del leaves, ref_leaves, grads, grads_r, y, yr
    torch.cuda.empty_cache()
    return ok


def check_conv(lengths: list[int], D: int, W: int = 4, dtype=torch.bfloat16, tag: str = "",
               cfg: ConvConfig | None = None) -> bool:
    T = sum(lengths)
    cu = cu_of(lengths)
    x = torch.randn(T, D, device=DEV).to(dtype).requires_grad_()
    w = (0.5 * torch.randn(D, W, device=DEV)).requires_grad_()
    b = torch.randn(D, device=DEV).requires_grad_()
    poison(8 * T * D * 4)
    y = causal_conv1d_triton(x, w, b, cu, config=cfg)
    g = torch.randn_like(y)
    gs = torch.autograd.grad(y, (x, w, b), g)
    xr, wr, br = (t.detach().float().requires_grad_() for t in (x, w, b))
    yr = causal_conv1d_ref_varlen(xr, wr, br, cu)
    grs = torch.autograd.grad(yr, (xr, wr, br), g.float())
    rows = [compare("y", y, yr)] + [compare(n, a, c) for n, a, c in zip(("dx", "dw", "db"), gs, grs)]
    tol = 3e-2 if dtype != torch.float32 else 1e-5
    ok = all((not r["nan"]) and r["rel_norm_err"] <= tol for r in rows)
    if dtype != torch.float32:
        ok &= rows[0]["allclose"] and rows[1]["allclose"]
    RESULTS["checks"].append(dict(tag=f"conv1d {tag}", T=T, D=D, W=W, dtype=str(dtype), ok=ok, rows=rows))
    log(f"check conv1d {tag} W={W} T={T} D={D} {dtype} {'PASS' if ok else 'FAIL'}  " +
        " ".join(f"{r['name']}:{r['rel_norm_err']:.1e}" for r in rows))
    return ok


def check_compile() -> bool:
    lengths = [5, 40, 17, 64]
    cu = cu_of(lengths)
    T, D, N = sum(lengths), 64, 16
    xs = [x.detach().requires_grad_() for x in scan_inputs(T, D, N)]
    w = torch.randn(D, 4, device=DEV, requires_grad=True)

    def f(u, delta, A, B, C, Dp, z, bias, w):
        uc = causal_conv1d_varlen(u, w, None, cu, backend="triton")
        return selective_scan_triton(uc, delta, A, B, C, Dp, z, bias, cu, config=CFG).float().square().sum()

    ok = True
    for backend in ("aot_eager",):
        try:
            cf = torch.compile(f, backend=backend, fullgraph=True)
            l1 = cf(*xs, w)
            g1 = torch.autograd.grad(l1, xs + [w])
            l0 = f(*xs, w)
            g0 = torch.autograd.grad(l0, xs + [w])
            # dB, dC, dA are summed with fp32 atomics in no fixed order: two runs differ by rounding,
            # and a bf16 gradient by an ulp or so
            good = bool(torch.allclose(l0, l1, rtol=1e-4)) and all(
                torch.allclose(a.float(), b.float(), rtol=2e-2, atol=1e-3) for a, b in zip(g0, g1))
        except Exception as e:  # report, do not hide
            log(f"compile {backend}: ERROR {type(e).__name__}: {str(e)[:300]}")
            good = False
        log(f"check torch.compile(fullgraph, {backend}) on torch {torch.__version__}: {'PASS' if good else 'FAIL'}")
        RESULTS["checks"].append(dict(tag=f"compile-{backend}", ok=good))
        ok &= good
    return ok


# ----------------------------------------------------------------------------------------------
# timing
def bench(fn, sets: int = 3, rep: int = 100) -> float:
    i = [0]

    def run():
        fn(i[0] % sets)
        i[0] += 1
    return float(do_bench(run, warmup=100, rep=rep, return_mode="median"))  # warm-up: clocks ramp up after compiles


def scan_timer(lengths: list[int], D: int, N: int = 16, cfg: ScanConfig | None = None, sets: int = 3,
               direct: bool = True):
    T = sum(lengths)
    cu = cu_of(lengths)
    inp = [[x.requires_grad_() if x.is_floating_point() else x for x in scan_inputs(T, D, N, seed=10 + s)]
           for s in range(sets)]
    gs = [torch.randn(T, D, device=DEV).to(torch.bfloat16) for _ in range(sets)]

    def fwd(k):
        with torch.no_grad():
            selective_scan_triton(*inp[k], cu, config=cfg, direct=direct)

    def fwdbwd(k):
        y = selective_scan_triton(*inp[k], cu, config=cfg, direct=direct)
        torch.autograd.grad(y, inp[k], gs[k])
    return fwd, fwdbwd


def scan_kernel_stats(lengths: list[int], D: int, cfg: ScanConfig | None, N: int = 16) -> dict:
    """Registers / spills of the scan's kernels at this shape: one launch of the forward and the
    backward through the launchers, which record them."""
    cu = cu_of(lengths)
    xs = scan_inputs(sum(lengths), D, N)
    cfg, stats = cfg or DEFAULT_CONFIG, {}
    y, states = launch_forward(*xs, cu, True, cfg, stats)
    launch_backward(torch.ones_like(y), *xs, cu, states, True, cfg, stats)
    return stats


def time_scan(tag: str, lengths: list[int], D: int, real_tokens: int | None = None, cfg=None, rep=100) -> dict:
    T = sum(lengths)
    cfg = cfg or CFG
    fwd, fb = scan_timer(lengths, D, cfg=cfg)
    tf, tfb = bench(fwd, rep=rep), bench(fb, rep=rep)
    real = real_tokens or T
    stats = scan_kernel_stats(lengths, D, cfg)
    row = dict(tag=tag, D=D, T=T, S=len(lengths), max_len=max(lengths), real_tokens=real, fwd_ms=tf, fwdbwd_ms=tfb,
               real_tok_per_s_fwdbwd=real / tfb * 1e3, kernel_stats=stats)
    RESULTS["timings"].append(row)
    log(f"scan {tag:30s} D={D} T={T:7d} S={len(lengths):5d} fwd {tf:8.3f} ms  fwd+bwd {tfb:8.3f} ms  "
        f"{row['real_tok_per_s_fwdbwd'] / 1e6:6.2f}M real tok/s  regs/spills " +
        " ".join(f"{k}:{v['n_regs']}/{v['n_spills']}" for k, v in stats.items()))
    torch.cuda.empty_cache()
    return row


def graphed(fn):
    """``fn(0)`` captured in a CUDA graph (after warm-up on a side stream); returns a replayer."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn(0)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn(0)
    return lambda k: g.replay()


def conv_timer(lengths: list[int], D: int, W: int = 4, cfg: ConvConfig | None = None, direct: bool = True):
    T = sum(lengths)
    cu = cu_of(lengths)
    xs = [torch.randn(T, D, device=DEV).to(torch.bfloat16).requires_grad_() for _ in range(3)]
    w = torch.randn(D, W, device=DEV, requires_grad=True)
    b = torch.randn(D, device=DEV, requires_grad=True)
    g = torch.randn(T, D, device=DEV).to(torch.bfloat16)

    def fb(k):
        y = causal_conv1d_triton(xs[k], w, b, cu, config=cfg, direct=direct)
        torch.autograd.grad(y, (xs[k], w, b), g)

    def f(k):
        with torch.no_grad():
            causal_conv1d_triton(xs[k], w, b, cu, config=cfg, direct=direct)
    return f, fb


def time_conv(tag: str, lengths: list[int], D: int, scan: tuple[float, float], W: int = 4,
              cfg: ConvConfig | None = None) -> dict:
    """Eager fwd and fwd+bwd, and fwd+bwd replayed from a CUDA graph (GPU time without the Python,
    autograd and launch overhead); ``scan`` = the scan's (eager, graphed) fwd+bwd at the same shape."""
    T = sum(lengths)
    f, fb = conv_timer(lengths, D, W, cfg=cfg)
    tf, tfb = bench(f), bench(fb)
    tg = bench(graphed(fb))
    row = dict(tag=tag, D=D, T=T, fwd_ms=tf, fwdbwd_ms=tfb, graphed_fwdbwd_ms=tg, ratio_to_scan=tfb / scan[0],
               graphed_ratio_to_scan=tg / scan[1])
    RESULTS["conv"].append(row)
    log(f"conv {tag:30s} D={D} T={T:7d} eager fwd {tf:6.3f} fwd+bwd {tfb:6.3f} ms = {100 * row['ratio_to_scan']:5.1f}% "
        f"of scan | graphed fwd+bwd {tg:6.3f} ms = {100 * row['graphed_ratio_to_scan']:5.1f}%")
    return row


def time_reference(lengths: list[int], D: int) -> None:
    T = sum(lengths)
    cu = cu_of(lengths)
    xs = [x.float().requires_grad_() for x in scan_inputs(T, D, 16)]
    g = torch.randn(T, D, device=DEV)
    for _ in range(2):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        y = selective_scan_ref_varlen(*xs, cu)
        torch.autograd.grad(y, xs, g)
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) * 1e3
    row = dict(tag="pytorch-reference fp32", D=D, T=T, S=len(lengths), fwdbwd_ms=dt, real_tok_per_s_fwdbwd=T / dt * 1e3)
    RESULTS["timings"].append(row)
    log(f"scan pytorch-reference (fp32)           D={D} T={T:7d} fwd+bwd {dt:9.1f} ms  {T / dt * 1e3 / 1e6:6.3f}M tok/s")
    torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------
# fused residual add + RMSNorm (rerankers/kernels/add_rmsnorm), the block's pre-norm step
def addnorm_inputs(T: int, H: int, case: str, seed: int = 0):
    """case "layer": bf16 hidden + fp32 residual -> fp32 residual_out, bf16 out (a block under autocast);
    "first": no residual, fp32 hidden (the embedding), bf16 out; "final": residual_out not kept, fp32 out."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    h = torch.randn(T, H, device=DEV, generator=g)
    h = (h if case == "first" else h.to(torch.bfloat16)).requires_grad_()
    r = None if case == "first" else torch.randn(T, H, device=DEV, generator=g).requires_grad_()
    w = (1 + 0.3 * torch.randn(H, device=DEV, generator=g)).requires_grad_()
    kw = dict(residual_in_fp32=case != "final", out_dtype=None if case == "final" else torch.bfloat16,
              keep_residual=case != "final")
    return [t for t in (h, r, w) if t is not None], (h, r, w), kw


def addnorm_fn(fused: bool, cfg: NormConfig | None = None, direct: bool = True):
    if fused:
        return lambda h, r, w, **kw: add_rmsnorm_triton(h, r, w, 1e-5, config=cfg, direct=direct, **kw)
    return lambda h, r, w, **kw: add_rmsnorm_ref(h, r, w, 1e-5, **kw)


def addnorm_step(fn, args, kw, leaves, g_out, g_res) -> list[torch.Tensor]:
    out, res = fn(*args, **kw)
    outs, gs = ([out, res], [g_out, g_res]) if res is not None and res is not args[0] else ([out], [g_out])
    return list(torch.autograd.grad(outs, leaves, gs))


def check_addnorm(T: int, H: int, case: str, cfg: NormConfig | None = None, seed: int = 1) -> bool:
    leaves, args, kw = addnorm_inputs(T, H, case, seed)
    ref_args = tuple(None if t is None else t.detach().clone().requires_grad_() for t in args)
    ref_leaves = [t for t in ref_args if t is not None]
    poison(8 * T * H * 4)
    out, res = addnorm_fn(True, cfg)(*args, **kw)
    out_r, res_r = addnorm_fn(False)(*ref_args, **kw)
    g_out = torch.randn(out.shape, device=DEV).to(out.dtype)
    g_res = torch.randn(out.shape, device=DEV) if kw["keep_residual"] else None
    poison(8 * T * H * 4)
    grads = addnorm_step(addnorm_fn(True, cfg), args, kw, leaves, g_out, g_res)
    grads_r = addnorm_step(addnorm_fn(False), ref_args, kw, ref_leaves, g_out, g_res)
    names = ["dhidden"] + (["dresidual"] if args[1] is not None else []) + ["dweight"]
    rows = [compare("out", out, out_r)] + ([compare("residual_out", res, res_r)] if res is not None else [])
    rows += [compare(n, a, b) for n, a, b in zip(names, grads, grads_r)]
    dtypes = [out.dtype] + ([res.dtype] if res is not None else []) + [t.dtype for t in leaves]
    ok = True
    for r, dt in zip(rows, dtypes):
        r["ok"] = (not r["nan"]) and r["rel_norm_err"] <= (1e-5 if dt == torch.float32 else 1e-2)
        ok &= r["ok"]
    RESULTS["checks"].append(dict(tag=f"add+rmsnorm {case}", T=T, H=H, ok=ok, rows=rows))
    log(f"check add+rmsnorm {case:6s} T={T:6d} H={H:5d} {'PASS' if ok else 'FAIL'}  " +
        " ".join(f"{r['name']}:{r['rel_norm_err']:.1e}{'' if r['ok'] else '!'}" for r in rows))
    return ok


def addnorm_bytes(T: int, H: int, case: str) -> int:
    """HBM bytes of the fused fwd+bwd: reads/writes of (T, H) tensors (per element: see KERNEL_NOTES.md)."""
    per_elt = {"layer": (2 + 4 + 2 + 4) + (2 + 4 + 4 + 2 + 4), "first": (4 + 2) + (2 + 4 + 4),
               "final": (2 + 4 + 4) + (4 + 2 + 4 + 2 + 4)}[case]
    return per_elt * T * H


def time_addnorm(T: int, H: int, case: str, cfg: NormConfig | None = None) -> dict:
    """Fused (Triton) vs unfused (the PyTorch ops the block ran before), fwd and fwd+bwd, eager and
    replayed from a CUDA graph (GPU time); three rotating input sets."""
    sets = [addnorm_inputs(T, H, case, seed=20 + k) for k in range(3)]
    g_out = torch.randn(T, H, device=DEV).to(torch.float32 if case == "final" else torch.bfloat16)
    g_res = torch.randn(T, H, device=DEV)
    row = dict(T=T, H=H, case=case, cfg=(cfg or NormConfig()).__dict__)
    for fused in (True, False):
        fn = addnorm_fn(fused, cfg)

        def f(k, fn=fn):
            with torch.no_grad():
                fn(*sets[k][1], **sets[k][2])

        def fb(k, fn=fn):
            addnorm_step(fn, sets[k][1], sets[k][2], sets[k][0], g_out, g_res)
        name = "fused" if fused else "unfused"
        row[f"{name}_fwd_ms"], row[f"{name}_fwdbwd_ms"] = bench(f), bench(fb)
        row[f"{name}_graphed_fwdbwd_ms"] = bench(graphed(fb))
    row["fused_graphed_TBps"] = addnorm_bytes(T, H, case) / row["fused_graphed_fwdbwd_ms"] / 1e9
    RESULTS["addnorm"].append(row)
    log(f"add+rmsnorm {case:6s} T={T:6d} H={H:5d} {cfg or 'default':>14} | fused fwd {row['fused_fwd_ms']:6.3f} "
        f"fwd+bwd {row['fused_fwdbwd_ms']:6.3f} graphed {row['fused_graphed_fwdbwd_ms']:6.3f} ms "
        f"({row['fused_graphed_TBps']:4.2f} TB/s) | unfused fwd {row['unfused_fwd_ms']:6.3f} fwd+bwd "
        f"{row['unfused_fwdbwd_ms']:6.3f} graphed {row['unfused_graphed_fwdbwd_ms']:6.3f} ms | graphed speed-up "
        f"{row['unfused_graphed_fwdbwd_ms'] / row['fused_graphed_fwdbwd_ms']:4.1f}x")
    torch.cuda.empty_cache()
    return row


def time_mamba(tag: str, batch: int, L: int, D: int, real_tokens: int, N: int = 16) -> None:
    import selective_scan_cuda as ssc  # built from mamba-ssm's csrc (see BENCHMARKS.md)
    sets = []
    for s in range(3):
        u, delta, A, B, C, Dp, z, bias = scan_inputs(batch * L, D, N, seed=20 + s)
        cl = lambda x: x.view(batch, L, -1).transpose(1, 2).contiguous()
        Bm = cl(B).unsqueeze(1)
        Cm = cl(C).unsqueeze(1)
        sets.append((cl(u), cl(delta), A, Bm, Cm, Dp, cl(z), bias, torch.randn(batch, D, L, device=DEV).to(torch.bfloat16)))

    def fwd(k):
        u, delta, A, B, C, Dp, z, bias, _ = sets[k]
        ssc.fwd(u, delta, A, B, C, Dp, z, bias, True)

    def fb(k):
        u, delta, A, B, C, Dp, z, bias, dout = sets[k]
        out, x, *_ = ssc.fwd(u, delta, A, B, C, Dp, z, bias, True)
        ssc.bwd(u, delta, A, B, C, Dp, z, bias, dout, x, out, None, True, False)
    tf, tfb = bench(fwd), bench(fb)
    row = dict(tag=tag, batch=batch, L=L, D=D, real_tokens=real_tokens, fwd_ms=tf, fwdbwd_ms=tfb,
               real_tok_per_s_fwdbwd=real_tokens / tfb * 1e3)
    RESULTS["mamba"].append(row)
    log(f"mamba-ssm CUDA {tag:24s} B{batch}xL{L} D={D} fwd {tf:8.3f} ms fwd+bwd {tfb:8.3f} ms  "
        f"{row['real_tok_per_s_fwdbwd'] / 1e6:6.2f}M real tok/s")


def build_mamba(src: str, build_dir: str) -> None:
    """JIT-build mamba-ssm's selective_scan_cuda extension (its csrc, sm_90 only) into build_dir."""
    from torch.utils.cpp_extension import load
    cs = os.path.join(src, "csrc", "selective_scan")
    srcs = [os.path.join(cs, f) for f in sorted(os.listdir(cs)) if f.endswith((".cu", ".cpp"))]
    os.makedirs(build_dir, exist_ok=True)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    t0 = time.time()
    load(name="selective_scan_cuda", sources=srcs, extra_cflags=["-O3", "-std=c++17"],
         extra_cuda_cflags=["-O3", "-std=c++17", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
                            "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
                            "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
                            "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math"],
         extra_include_paths=[cs], build_directory=build_dir, verbose=True)
    log(f"built selective_scan_cuda in {time.time() - t0:.0f} s")


def time_recompute(tag: str, lengths: list[int], D: int, base: ScanConfig | None) -> None:
    """ScanConfig.recompute_states off and on, same run: what the forward keeps for the backward
    (bytes), the peak memory a fwd+bwd adds over its inputs, eager and graphed fwd+bwd times."""
    T = sum(lengths)
    cu = cu_of(lengths)
    for rc in (False, True):
        cfg = replace(base or DEFAULT_CONFIG, recompute_states=rc)
        fwd, fb = scan_timer(lengths, D, cfg=cfg)
        fb(0)
        xs = scan_inputs(T, D, 16)
        with torch.no_grad():
            _, kept = launch_forward(*xs, cu, True, cfg)
        kept_mb = kept.numel() * kept.element_size() / 1e6
        del kept, xs
        torch.cuda.synchronize()
        base_mem = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fb(1)
        torch.cuda.synchronize()
        peak_mb = (torch.cuda.max_memory_allocated() - base_mem) / 1e6
        tf, tfb = bench(fwd), bench(fb)
        gfb = bench(graphed(fb))
        row = dict(tag=tag, T=T, D=D, recompute_states=rc, kept_states_mb=kept_mb, fwdbwd_peak_mb=peak_mb,
                   fwd_ms=tf, fwdbwd_ms=tfb, graphed_fwdbwd_ms=gfb)
        RESULTS["recompute"].append(row)
        log(f"recompute={int(rc)} {tag:24s} T={T:6d} D={D} kept states {kept_mb:8.1f} MB  fwd+bwd peak +{peak_mb:8.1f} MB"
            f"  fwd {tf:7.3f} ms  fwd+bwd {tfb:7.3f} ms  graphed {gfb:7.3f} ms")
        del fwd, fb
        torch.cuda.empty_cache()


def time_log_s(gen: torch.Generator) -> None:
    """The floor on the kernels' search depth (``triton_utils.LOG_S_MIN``), off (1) and on (its default):
    scan and conv fwd+bwd at fixed shapes, then the first call's wall time (compilation included) at
    sequence counts not met before, all of the same 4,096 tokens (so only the count changes, not the window
    or T's divisibility), as a scaling sweep or a reranking service meets them. Run it with a fresh
    ``TRITON_CACHE_DIR``, or the on-disk cache of an earlier run hides the compilations."""
    floor = triton_utils.LOG_S_MIN
    shapes = [("B1xL16384", [16384], 2048), ("B64xL128", [128] * 64, 1536), ("msmarco 23K", msmarco_lengths(gen, 23272), 1536)]
    try:
        for m in (1, floor):
            triton_utils.LOG_S_MIN = m
            for tag, lens, D in shapes:
                r = time_scan(f"LOG_S_MIN={m} {tag}", lens, D)
                _, cfb = conv_timer(lens, D)
                conv_ms = bench(cfb)
                RESULTS["log_s"].append(dict(log_s_min=m, tag=tag, S=len(lens), T=sum(lens), D=D,
                                             scan_fwd_ms=r["fwd_ms"], scan_fwdbwd_ms=r["fwdbwd_ms"],
                                             conv_fwdbwd_ms=conv_ms))
                log(f"LOG_S_MIN={m} {tag:14s} conv fwd+bwd {conv_ms:7.3f} ms")
            for S in (3, 24, 192):  # counts whose search depth differs from every shape above
                lens = [4096 // S + (i < 4096 % S) for i in range(S)]
                _, fb = scan_timer(lens, 1536, sets=1)
                _, cfb = conv_timer(lens, 1536)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                fb(0)
                cfb(0)
                torch.cuda.synchronize()
                first = time.perf_counter() - t0
                RESULTS["log_s"].append(dict(log_s_min=m, tag="first call", S=S, T=sum(lens), D=1536,
                                             first_call_s=first))
                log(f"LOG_S_MIN={m} first call at S={S:4d}: {first:6.2f} s (compilation included)")
    finally:  # an interrupted run leaves the default for what follows
        triton_utils.LOG_S_MIN = floor


def waves(programs: int, n_regs: int, warps: int, sms: int) -> float:
    """Waves of a grid of ``programs`` equal programs: resident programs per SM from the registers (64K per
    SM) and the 64-warp limit."""
    per_sm = max(1, min(65536 // max(1, n_regs * 32 * warps), 64 // warps))
    return programs / (per_sm * sms)


def auto_windows(T: int, S: int, D: int, cfg: ScanConfig) -> tuple[int, int]:
    """The (forward, backward) windows the launchers take for ``cfg`` at T tokens in S sequences, D channels."""
    dev = torch.device(DEV)
    try:
        from rerankers.kernels.selective_scan.op import backward_window, forward_window
    except ImportError:  # an older checkout first on PYTHONPATH: powers of two for both walks
        return (pick_window(cfg.window, T, D, cfg.warps, cfg.block_t, dev),
                pick_window(cfg.window_bwd, T, D, cfg.warps_bwd, cfg.block_t, dev))
    return forward_window(cfg, T, S, D, dev)[0], backward_window(cfg, T, S, D, dev)[0]


WAVE_SHAPES = (("msmarco 23K", 23272, 1536), ("msmarco 23K D2048", 23272, 2048), ("msmarco 5.8K", 5819, 1536),
               ("msmarco 5.8K D2048", 5819, 2048))


def time_waves(gen: torch.Generator, windows: tuple[int, ...] = (0, 192, 240, 256, 272, 288, 320, 360, 400, 480, 512),
               shapes=WAVE_SHAPES) -> None:
    """Every program of a window walks the same number of tokens, so the scan's time goes in whole waves
    of programs (KERNEL_NOTES.md, fourth and fifth sessions). Times fwd and fwd+bwd at MS MARCO-shaped
    packs of 64 / 256 pairs (5.8K / 23K tokens) for each window (forward = backward window; 0: the
    launchers' own pick, which may differ between the walks), with the waves each grid makes from its
    kernels' registers. With an older checkout first on PYTHONPATH it times that checkout's kernels."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for tag, total, D in shapes:
        lens = msmarco_lengths(gen, total)
        T = sum(lens)
        for w in windows:
            cfg = replace(CFG or DEFAULT_CONFIG, window=w, window_bwd=w)
            r = time_scan(f"window={w} {tag}", lens, D, cfg=cfg)
            stats = r["kernel_stats"]
            Wf, Wb = auto_windows(T, len(lens), D, cfg)
            pf = triton_utils.cdiv(T, Wf) * triton_utils.cdiv(D, 32 * cfg.warps)
            pb = triton_utils.cdiv(T, Wb) * triton_utils.cdiv(D, 32 * cfg.warps_bwd)
            wf = waves(pf, stats.get("fwd", {}).get("n_regs", 0), cfg.warps, sms) if stats else float("nan")
            wb = waves(pb, stats.get("bwd", {}).get("n_regs", 0), cfg.warps_bwd, sms) if stats else float("nan")
            RESULTS["waves"].append(dict(tag=tag, T=T, D=D, window=w, window_fwd=Wf, window_bwd=Wb, programs_fwd=pf,
                                         programs_bwd=pb, fwd_waves=wf, bwd_waves=wb, fwd_ms=r["fwd_ms"],
                                         fwdbwd_ms=r["fwdbwd_ms"], kernel_stats=stats))
            log(f"waves {tag:18s} W={w:4d} fwd W {Wf:4d} programs {pf:5d} {wf:5.2f} waves | bwd W {Wb:4d} "
                f"programs {pb:5d} {wb:5.2f} waves | fwd {r['fwd_ms']:.3f} ms fwd+bwd {r['fwdbwd_ms']:.3f} ms")


LEVERS = (("default", {}), ("fit_fwd", dict(fit_fwd=True)), ("fit_fwd reg128", dict(fit_fwd=True, registers=128)),
          ("bwd reg168", dict(registers_bwd=168)), ("fit_fwd reg128 bwd reg168",
                                                    dict(fit_fwd=True, registers=128, registers_bwd=168)))
# the sixth session's: the default (block_t 4, fit_fwd, registers 128) beside the fifth session's and chunk lengths
LEVERS6 = (("default", {}), ("fifth default", dict(block_t=8, fit_fwd=False, registers=0)),
           ("bt8 fit reg128", dict(block_t=8)), ("bt2 bh2", dict(block_t=2, bwd_history=2)))
# the tenth session's: the backward walk with the states split over two lanes (bwd_split), at register caps
# (128: 4 programs of 4 warps per SM, 168 B of spills on sm_90; 168: 3, no spills), warps and histories
LEVERS10 = (("default", {}), ("split", dict(bwd_split=True)), ("split reg168", dict(bwd_split=True, registers_bwd=168)),
            ("split reg248", dict(bwd_split=True, registers_bwd=248)),
            ("split bh2", dict(bwd_split=True, bwd_history=2)),
            ("split 2 warps", dict(bwd_split=True, warps_bwd=2)), ("split 8 warps", dict(bwd_split=True, warps_bwd=8)))
LEVER_SHAPES = (("B8xL2048 D2048", 8, 2048, 2048),)


def time_levers(gen: torch.Generator, levers=LEVERS, fixed=LEVER_SHAPES, waves: int = 3, pick: str | None = None,
                checks: bool = True, warm: bool = False) -> bool:
    """ScanConfig levers (KERNEL_NOTES.md; the fifth session's untimed ones by default), each a set of fields
    replaced in the default config: each checked against the fp32 reference first, bf16 on an MS MARCO-shaped
    pack (short sequences: the fitted, run-time windows) and on a ragged pack of long ones (the power-of-two
    fallback), fp32 for the last; then timed at the training shapes (the first ``waves`` of WAVE_SHAPES) and at
    the equal-length ``fixed`` shapes beside the default, with each kernel's registers and spills.

    ``pick``: ','-separated lever names to run (default all); ``checks`` off skips the checks (shown on an earlier
    call); ``warm``: only compile, one forward and backward a shape and lever, untimed (several processes warming
    Triton's disk cache at once cut a timed run's compile time; the pack shapes come from the same seed)."""
    base = CFG or DEFAULT_CONFIG
    if pick:
        names = pick.split(",")
        unknown = sorted(set(names) - {n for n, _ in levers})
        if unknown:
            raise SystemExit(f"--levers: unknown {unknown}; known: {[n for n, _ in levers]}")
        levers = tuple(lv for lv in levers if lv[0] in names)
    ok = True
    for name, kw in levers[1:] if checks and not warm else ():
        cfg = replace(base, **kw)
        lens = msmarco_lengths(gen, 8192)
        Wf, Wb = auto_windows(sum(lens), len(lens), 1536, cfg)
        log(f"lever {name}: windows {Wf}/{Wb} at the 8K check pack")
        ok &= check_scan(f"lever {name} 8K", lens, 1536, seed=12, cfg=cfg)
        ok &= check_scan(f"lever {name} ragged", [2048, 1, 300, 90, 1, 255, 257, 2627, 77], 1536, seed=14, cfg=cfg)
    if checks and not warm and len(levers) > 1:
        ok &= check_scan(f"lever {levers[-1][0]} fp32", msmarco_lengths(gen, 4096), 1536, dtype=torch.float32,
                         seed=13, cfg=replace(base, **levers[-1][1]))
        log(f"LEVER CHECKS {'PASS' if ok else 'FAIL'}")
    shapes = ([(tag, msmarco_lengths(gen, total), D) for tag, total, D in WAVE_SHAPES[:waves]]
              + [(tag, [L] * b, D) for tag, b, L, D in fixed])
    for tag, lens, D in shapes:
        for name, kw in levers:
            cfg = replace(base, **kw)
            if warm:
                fwd, fb = scan_timer(lens, D, cfg=cfg)
                fwd(0), fb(0)
                torch.cuda.synchronize()
                log(f"lever {name} {tag}: compiled")
                continue
            r = time_scan(f"{name} {tag}", lens, D, cfg=cfg)
            # replayed from a CUDA graph: the GPU's time alone (at 5.8K tokens the eager call is host-bound: the
            # same forward kernels timed 0.20-0.36 ms in one run)
            gfb = bench(graphed(scan_timer(lens, D, cfg=cfg)[1]))
            Wf, Wb = auto_windows(sum(lens), len(lens), D, cfg)
            RESULTS.setdefault("levers", []).append(dict(lever=name, tag=tag, T=sum(lens), D=D, window_fwd=Wf,
                                                         window_bwd=Wb, fwd_ms=r["fwd_ms"], fwdbwd_ms=r["fwdbwd_ms"],
                                                         graphed_fwdbwd_ms=gfb, kernel_stats=r["kernel_stats"]))
            log(f"lever {name:26s} {tag:18s} windows {Wf:3d}/{Wb:3d}  fwd {r['fwd_ms']:.3f} ms  "
                f"fwd+bwd {r['fwdbwd_ms']:.3f} ms  graphed fwd+bwd {gfb:.3f} ms")
    return ok


FIXED_SHAPES = (("B64xL128", 64, 128, 2048), ("B8xL2048", 8, 2048, 2048), ("B1xL16384", 1, 16384, 2048),
                ("B64xL128 D1536", 64, 128, 1536), ("B8xL2048 D1536", 8, 2048, 1536))


def time_fixed(mamba_ext: str | None) -> None:
    """Issue 13's fixed shapes (equal lengths, D 2048; D 1536 for the earlier tables): ours, then
    mamba-ssm's CUDA scan on the same batch in the same process (waits for a background build)."""
    for tag, b, L, D in FIXED_SHAPES:
        time_scan(f"fixed {tag}", [L] * b, D)
    if not mamba_ext:
        return
    sys.path.insert(0, mamba_ext)
    building = os.path.exists(os.path.join(mamba_ext, "build.log"))  # gpu_suite's background build logs there
    for _ in range(300 if building else 0):  # it writes DONE or FAILED into the folder when it ends
        if any(os.path.exists(os.path.join(mamba_ext, f)) for f in ("DONE", "FAILED")):
            break
        time.sleep(2)
    try:
        for tag, b, L, D in FIXED_SHAPES:
            time_mamba(f"fixed {tag}", b, L, D, b * L)
    except Exception as e:  # noqa: BLE001 - the anchor is optional: said, the rest goes on
        log(f"mamba-ssm baseline unavailable: {type(e).__name__}: {str(e)[:300]}")


# ----------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--mamba-ext", default=None)
    ap.add_argument("--build-mamba", default=None, help="mamba-ssm source folder: build its scan extension, exit")
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--cfg-json", default="/tmp/best_scan_cfg.json", help="best config: written by 'configs', read otherwise")
    ap.add_argument("--only", default="check,configs,sweep,conv,ref,mamba",
                    help="parts, comma-separated; also scancheck (the scan's checks without the conv's), recompute (timings + checks), recompute-check (checks only), "
                         "log-s (the search-depth floor off and on), waves (windows against whole waves), "
                         "fixed (issue 13's equal-length shapes, with mamba-ssm where --mamba-ext holds it), "
                         "levers5 (the fifth session's untimed ScanConfig levers: checks, then timings), "
                         "levers6 (the sixth session's default beside the fifth's and other chunk lengths), "
                         "levers10 (the split backward walk's variants beside the default)")
    ap.add_argument("--levers", default=None, help="levers10: ','-separated lever names (default all)")
    ap.add_argument("--no-lever-checks", action="store_true", help="levers10: time only (checked on an earlier call)")
    ap.add_argument("--warm", action="store_true",
                    help="levers10: compile only (fill Triton's disk cache for a timed run; run several at once)")
    ap.add_argument("--windows", default=None,
                    help="','-separated windows for 'waves' (0: the launchers' pick; default: 0 and 192..512)")
    ap.add_argument("--configs", default=None,
                    help="';'-separated ScanConfig tuples for 'configs' (default: the built-in sweep)")
    ap.add_argument("--keep-default", action="store_true", help="time the configs but keep the default for the rest")
    ap.add_argument("--recompute", action="store_true",
                    help="checks and timings with ScanConfig.recompute_states (the part 'recompute' times both)")
    args = ap.parse_args()
    if args.build_mamba:
        build_mamba(args.build_mamba, args.mamba_ext or "/tmp/mamba_build")
        return 0
    parts = set(args.only.split(","))
    props = torch.cuda.get_device_properties(0)
    RESULTS["env"] = dict(card=props.name, sms=props.multi_processor_count, torch=torch.__version__,
                          triton=triton.__version__, default_config=DEFAULT_CONFIG.__dict__,
                          conv_default_config=CONV_DEFAULT_CONFIG.__dict__)
    log(f"card {props.name} ({props.multi_processor_count} SMs), torch {torch.__version__}, triton {triton.__version__}")
    gen = torch.Generator().manual_seed(0)
    all_ok = True
    os.makedirs(args.out, exist_ok=True)

    def save():
        with open(os.path.join(args.out, "bench_kernels.json"), "w") as f:
            json.dump(RESULTS, f, indent=1)
    global CFG
    if "configs" in parts:
        # ScanConfig(window, window_bwd, block_t, warps, warps_bwd, bwd_history); window 0 = from T and D
        cands = [(0, 0, 8, 4, 4, 4), (0, 0, 8, 4, 4, 2), (0, 0, 8, 4, 4, 8), (0, 0, 4, 4, 4, 4), (0, 0, 4, 4, 4, 2),
                 (0, 0, 8, 4, 2, 4), (0, 0, 4, 4, 2, 4), (128, 128, 8, 4, 4, 4), (256, 256, 4, 4, 4, 4)]
        if args.configs:
            cands = [tuple(int(v) for v in c.strip("() ").split(",")) for c in args.configs.split(";")]
        shapes = [("msmarco 8K", msmarco_lengths(gen, 8192), 1536), ("msmarco 32K", msmarco_lengths(gen, 32768), 1536),
                  ("B8xL2048", [2048] * 8, 1536)]
        totals = {}
        for c in cands:
            cfg = ScanConfig(*c)
            for tag, lens, D in shapes:
                try:
                    r = time_scan(f"cfg {c} {tag}", lens, D, cfg=cfg)
                    RESULTS["configs"].append(dict(cfg=cfg.__dict__, shape=tag, fwd_ms=r["fwd_ms"],
                                                   fwdbwd_ms=r["fwdbwd_ms"]))
                    totals[c] = totals.get(c, 0.0) + r["fwdbwd_ms"] / len(shapes)
                except Exception as e:
                    log(f"cfg {c} {tag}: ERROR {type(e).__name__}: {str(e)[:300]}")
                    totals[c] = float("inf")
            save()
        best = min(totals, key=totals.get)
        CFG = None if args.keep_default else ScanConfig(*best)
        if CFG is not None:
            with open(args.cfg_json, "w") as f:
                json.dump(CFG.__dict__, f)
        log(f"best config {ScanConfig(*best)} (mean fwd+bwd over the config shapes {totals[best]:.3f} ms); "
            f"using {CFG or DEFAULT_CONFIG}")
        save()
    elif os.path.exists(args.cfg_json):
        with open(args.cfg_json) as f:
            CFG = ScanConfig(**json.load(f))
        log(f"config from {args.cfg_json}: {CFG}")
    if args.recompute:
        CFG = replace(CFG or DEFAULT_CONFIG, recompute_states=True)
        log(f"recompute_states on: {CFG}")
    RESULTS["env"]["config_used"] = (CFG or DEFAULT_CONFIG).__dict__
    scan_checks = ("check" in parts or "scancheck" in parts) and not args.skip_check  # scancheck: without the conv's
    if scan_checks:
        all_ok &= check_scan("small T=126 D=64", [5, 40, 17, 64], 64, seed=6)
        all_ok &= check_scan("msmarco-pack 8K", msmarco_lengths(gen, 8192), 1536)
        all_ok &= check_scan("msmarco-pack 8K D2048", msmarco_lengths(gen, 8192), 2048, seed=2)
        all_ok &= check_scan("2x2048 + ragged", [2048, 2048, 1, 255, 257, 513], 1536, seed=3)
        all_ok &= check_scan("1x16384 (D512)", [16384], 512, seed=4)
        # small windows: many carried windows (chains longer than the carry pass's group of 8),
        # other windows in the backward than in the forward, 3 channel blocks of 64
        all_ok &= check_scan("ragged, windows 32/48, 2 warps", [1000, 1, 2, 700, 33, 64, 2300], 192, seed=7,
                             cfg=ScanConfig(32, 48, 8, 2, 2))
        all_ok &= check_scan("N=8 (no butterfly) 4K", msmarco_lengths(gen, 4096), 1536, N=8, seed=8)
        all_ok &= check_scan("fp32 msmarco 4K", msmarco_lengths(gen, 4096), 1536, dtype=torch.float32, seed=5)
    if ("check" in parts and not args.skip_check) or "convcheck" in parts:
        default = conv_tiles(CONV_DEFAULT_CONFIG)
        ragged = [2048, 1, 3, 0, 5000, 77, 4, 700]
        for v in [default, ((16, 2, 128), (8, 2, 256)), ((64, 4, 16), (32, 4, 16))]:
            cfg = conv_config(v)
            all_ok &= check_conv(msmarco_lengths(gen, 8192), 1536, tag=str(v), cfg=cfg)
            all_ok &= check_conv(ragged, 192, dtype=torch.float32, tag=str(v), cfg=cfg)
            for W in (1, 2, 3):
                all_ok &= check_conv(ragged, 200, W=W, dtype=torch.float32, tag=str(v), cfg=cfg)
        log(f"CONV CHECKS {'PASS' if all_ok else 'FAIL'}")
    if scan_checks:
        all_ok &= check_compile()
        log(f"ALL CHECKS {'PASS' if all_ok else 'FAIL'}")
        save()
    if "sweep" in parts:
        anchors = [("B64xL128", [128] * 64, 1536), ("B8xL2048", [2048] * 8, 1536), ("B1xL16384", [16384], 2048)]
        for tag, lens, D in anchors:
            time_scan(tag, lens, D)
        for D in (1536, 2048):
            for T in (8192, 32768, 131072, 262144):
                time_scan(f"msmarco-pack {T // 1024}K", msmarco_lengths(gen, T), D, rep=50 if T > 100000 else 100)
        pairs = msmarco_lengths(gen, 5722)
        time_scan("64-ish pairs packed", pairs, 1536)
        time_scan("same pairs padded to 256", [256] * len(pairs), 1536, real_tokens=sum(pairs))
        time_scan("4x16384", [16384] * 4, 1536)
        save()
    if "mamba" in parts and args.mamba_ext:
        sys.path.insert(0, args.mamba_ext)
        for _ in range(240):  # a background build may still be finishing
            if os.path.exists(os.path.join(args.mamba_ext, "selective_scan_cuda.so")):
                break
            time.sleep(2)
        try:
            time_mamba("B64xL128", 64, 128, 1536, 8192)
            time_mamba("B8xL2048", 8, 2048, 1536, 16384)
            time_mamba("B1xL16384", 1, 16384, 2048, 16384)
            pairs = msmarco_lengths(gen, 5722)
            time_mamba("64-ish pairs padded", len(pairs), 256, 1536, sum(pairs))
            time_scan("same pairs packed (for mamba)", pairs, 1536)
        except Exception as e:
            log(f"mamba-ssm baseline unavailable: {type(e).__name__}: {str(e)[:300]}")
        save()
    if "conv" in parts:
        # (forward walk tiles, backward walk tiles); tiles = (rows per chunk, warps, row blocks aimed at)
        default = conv_tiles(CONV_DEFAULT_CONFIG)
        F, B = default
        variants = [default] + [(F, bt) for bt in [(16, 4, 64), (8, 4, 128), (8, 2, 128), (4, 4, 64)]]
        variants += [(ft, B) for ft in [(32, 4, 64), (16, 4, 128), (16, 2, 128), (8, 4, 64)]]
        shapes = [("msmarco-pack 8K", msmarco_lengths(gen, 8192), 1536),
                  ("msmarco-pack 32K", msmarco_lengths(gen, 32768), 1536),
                  ("msmarco-pack 32K D2048", msmarco_lengths(gen, 32768), 2048),
                  ("B1xL16384", [16384], 2048)]
        for i, (tag, lens, D) in enumerate(shapes):
            fb = time_scan(tag + " (scan, for conv ratio)", lens, D)["fwdbwd_ms"]
            gfb = bench(graphed(scan_timer(lens, D, cfg=CFG)[1]))
            log(f"scan {tag} graphed fwd+bwd {gfb:.3f} ms")
            for v in (variants if i < 2 else [default]):
                try:
                    time_conv(f"{tag} {v}", lens, D, (fb, gfb), cfg=conv_config(v))
                except Exception as e:
                    log(f"conv {tag} {v}: ERROR {type(e).__name__}: {str(e)[:300]}")
            save()
        save()
    if "overhead" in parts:
        # host time of eager calls, through the custom ops (direct=False) and through the plain
        # autograd.Function (direct=True; rerankers.kernels.custom_op): perf_counter over 50 calls (one
        # sync at the end), do_bench of the eager fwd+bwd, and a cProfile of the direct path
        import cProfile
        import io
        import pstats
        lens = msmarco_lengths(gen, 8192)
        timers = {d: (("conv", conv_timer(lens, 1536, direct=d)[1]),
                      ("scan", scan_timer(lens, 1536, cfg=CFG, direct=d)[1])) for d in (False, True)}
        for direct in (False, True, False, True):
            for name, fn in timers[direct]:
                for _ in range(5):
                    fn(0)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for k in range(50):
                    fn(k % 3)
                host = (time.perf_counter() - t0) / 50 * 1e3
                torch.cuda.synchronize()
                wall = bench(fn)
                RESULTS.setdefault("overhead", []).append(dict(op=name, direct=direct, host_ms=host, eager_ms=wall))
                log(f"overhead {name} {'direct   ' if direct else 'custom op'}: host {host:.3f} ms per eager "
                    f"fwd+bwd call, do_bench {wall:.3f} ms")
        for name, fn in timers[True]:
            prof = cProfile.Profile()
            prof.enable()
            for k in range(50):
                fn(k % 3)
            prof.disable()
            torch.cuda.synchronize()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
            with open(os.path.join(args.out, f"overhead_{name}.txt"), "w") as f:
                f.write(f"{name} fwd+bwd (direct path), 8K tokens D=1536, 50 calls\n{buf.getvalue()}")
        save()
    if "addnorm" in parts:
        # H: mamba-130m 768, 370m 1024, 1.4b 2048, 2.8b 2560; T: 8K and 32K packed tokens (+ a ragged T)
        for case in ("layer", "first", "final"):
            for T, H in ((8192, 768), (32768 + 17, 2560), (1, 96)):
                all_ok &= check_addnorm(T, H, case)
        all_ok &= check_addnorm(32768, 1024, "layer", cfg=NormConfig(rows=1, warps=4, rows_bwd=2, programs_bwd=64))
        log(f"ADD+RMSNORM CHECKS {'PASS' if all_ok else 'FAIL'}")
        for T in (8192, 32768):
            for H in (768, 1024, 2560):
                for case in ("layer", "first", "final"):
                    time_addnorm(T, H, case)
        for cfg in (NormConfig(rows=1, warps=4), NormConfig(rows=2, warps=8), NormConfig(rows=8, warps=8),
                    NormConfig(rows_bwd=1, warps_bwd=4), NormConfig(rows_bwd=8, warps_bwd=8),
                    NormConfig(programs_bwd=264), NormConfig(programs_bwd=1056)):
            for H in (768, 2560):
                time_addnorm(32768, H, "layer", cfg)
        save()
    if "recompute" in parts or "recompute-check" in parts:
        # mamba-370m at 256 pairs (~23K tokens, D_inner 2048), mamba-130m's D at 32K, one long sequence
        for tag, lens, D in [("msmarco 23K D2048", msmarco_lengths(gen, 23272), 2048),
                             ("msmarco 32K", msmarco_lengths(gen, 32768), 1536), ("B1xL16384", [16384], 2048)]:
            if "recompute" not in parts:  # recompute-check: the checks alone
                break
            time_recompute(tag, lens, D, CFG)
            save()
        for rc in (False, True) if "recompute" in parts else (True,):
            c = replace(CFG or DEFAULT_CONFIG, recompute_states=rc)
            all_ok &= check_scan(f"recompute={int(rc)} ragged 8K", [2048, 1, 3000, 1, 255, 257, 2627], 2048, seed=9,
                                 cfg=c)
            all_ok &= check_scan(f"recompute={int(rc)} windows 32/48", [1000, 1, 2, 700, 33, 64, 2300], 192, seed=7,
                                 cfg=replace(c, window=32, window_bwd=48, warps=2, warps_bwd=2))
        log(f"RECOMPUTE CHECKS {'PASS' if all_ok else 'FAIL'}")
        save()
    if "waves" in parts:
        if args.windows:
            time_waves(gen, tuple(int(w) for w in args.windows.split(",")))
        else:
            time_waves(gen)
        save()
    if "fixed" in parts:
        time_fixed(args.mamba_ext)
        save()
    if "levers5" in parts:
        all_ok &= time_levers(gen)
        save()
    if "levers10" in parts:  # the split backward walk beside the default, at the training and fixed shapes
        all_ok &= time_levers(gen, LEVERS10, FIXED_SHAPES[:3], pick=args.levers, checks=not args.no_lever_checks,
                              warm=args.warm)
        save()
    if "levers6" in parts:  # the sixth session's default beside the fifth's, at the training and fixed shapes
        all_ok &= time_levers(gen, LEVERS6, FIXED_SHAPES[:3])
        save()
    if "log-s" in parts:
        all_ok &= check_scan("LOG_S floor, ragged 8K", [2048, 1, 3000, 1, 255, 257, 2627], 2048, seed=11)
        time_log_s(gen)
        save()
    if "profile" in parts:
        fwd, fb = scan_timer(msmarco_lengths(gen, 32768), 1536, cfg=CFG)
        fb(0)
        torch.cuda.synchronize()
    if "ref" in parts:
        time_reference(msmarco_lengths(gen, 8192), 1536)
    save()
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())

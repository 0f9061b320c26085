"""Where the scan's backward walk spends its time (GPU; sixth session of 2026-12-01, issue 13).

    PYTHONPATH=. python3 benchmarks/ablate_scan_bwd.py [--out DIR] [--variants a,b,...]

Each variant is the package with one part of ``_scan_bwd_kernel`` taken out or replaced (a source patch applied
to a copy in /tmp; the results of a patched kernel are wrong by design, only its time is read), or the default
kernel under other ``ScanConfig`` fields (``RERANKERS_SCAN_CONFIG``). Every variant runs in its own process:
first all of them at once to compile (Triton's cache is shared), then one after another to time. Per variant, at
an MS MARCO-shaped pack of 23,272 tokens (D 1536, N 16, bf16): the GPU time of each scan kernel per forward +
backward (torch.profiler, 20 calls after 5 of warm-up), the walk's registers and spills. The patched kernels
never replace the package's; nothing imports this file.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BWD = "rerankers/kernels/selective_scan/backward.py"
ATOMIC_BFLY = ("tl.atomic_add(tl.where(which == 0, dB_ptr, dC_ptr) + t64 * N + n_l, v, mask=(n_l < N) & m,\n"
               "                                      sem=\"relaxed\")")
STORE_BFLY = "tl.store(tl.where(which == 0, dB_ptr, dC_ptr) + t64 * N + n_l, v, mask=(n_l < N) & m)"
BFLY = "v, which, n_l = _warp_sums(qs * dtu[:, None], h * g[:, None], offs_d)"
NO_BFLY = ("v = tl.sum(qs * dtu[:, None] + h * g[:, None], axis=1); which = (offs_d % 32) >> 4; "
           "n_l = offs_d % 16")
DZ = ("                    if HAS_Z:\n                        ypre = tl.sum(h * Ct[None, :], axis=1)\n"
      "                        if HAS_D:\n                            ypre += Dv * u\n"
      "                        tl.store(dz_ptr + t64 * s_dz + offs_d, dy * ypre * sz * (1.0 + zz * (1.0 - sz)), "
      "mask=md & m)\n")
ADVANCE = "for k in tl.static_range(j):"
CARRY = "carry = tl.where(((sm >> (j * BH + i)) & 1) != 0, 0.0, tl.exp2(dt[:, None] * A2) * qs)"
# variant -> (source patches of backward.py, RERANKERS_SCAN_CONFIG)
VARIANTS: dict[str, tuple[list[tuple[str, str]], str]] = {
    "default": ([], ""),
    "stores-not-atomics": ([(ATOMIC_BFLY, STORE_BFLY)], ""),  # dB / dC: plain stores (racy) instead of atomics
    "no-butterfly": ([(BFLY, NO_BFLY)], ""),  # per-thread sums instead of the warp butterfly, atomics kept
    "no-dz": ([(DZ, "")], ""),  # no ypre, no dz store
    "no-advance": ([(ADVANCE, "for k in tl.static_range(0):")], ""),  # each sub-chunk from h0: no re-advance
    "carry-no-exp": ([(CARRY, "carry = tl.where(((sm >> (j * BH + i)) & 1) != 0, 0.0, qs * 0.99)")], ""),
    "bh2": ([], "bwd_history=2"),
    "bh8": ([], "bwd_history=8"),
    "bt4": ([], "block_t=4,bwd_history=4"),
    "bt4-bh2": ([], "block_t=4,bwd_history=2"),
    "wb2": ([], "warps_bwd=2"),
    "wb2-bh2-r168": ([], "warps_bwd=2,bwd_history=2,registers_bwd=168"),
    "bh2-r168": ([], "bwd_history=2,registers_bwd=168"),
    "bt4-bh2-r168": ([], "block_t=4,bwd_history=2,registers_bwd=168"),
    "wb8": ([], "warps_bwd=8"),
}


def make_copy(name: str, patches: list[tuple[str, str]]) -> Path:
    """The package copied to /tmp/ablate/<name> with ``patches`` applied to the backward (each must match once)."""
    dst = Path("/tmp/ablate") / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(ROOT / "rerankers", dst / "rerankers", ignore=shutil.ignore_patterns("__pycache__"))
    src = (dst / BWD).read_text()
    for old, new in patches:
        if src.count(old) != 1:
            raise SystemExit(f"variant {name}: a patch matches {src.count(old)} times in {BWD}: {old[:60]!r}")
        src = src.replace(old, new)
    (dst / BWD).write_text(src)
    return dst


def worker(mode: str) -> None:
    """In a variant's process: compile (``warm``) or time (``time``) and print one JSON line."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_kernels import cu_of, msmarco_lengths, scan_inputs

    from rerankers.kernels.selective_scan.op import default_config, launch_backward, launch_forward
    gen = torch.Generator().manual_seed(0)
    lens = msmarco_lengths(gen, 23272)
    T, D = sum(lens), 1536
    cu = cu_of(lens)
    xs = scan_inputs(T, D, 16)
    cfg = default_config()
    dy = torch.randn(T, D, device="cuda").to(torch.bfloat16)
    stats: dict = {}

    def step():
        y, states = launch_forward(*xs, cu, True, cfg, stats)
        launch_backward(dy, *xs, cu, states, True, cfg, stats)
    step()
    torch.cuda.synchronize()
    if mode == "warm":
        print(json.dumps(dict(ok=True)))
        return
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    n = 20
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            step()
        torch.cuda.synchronize()
    per: dict[str, float] = {}
    for e in prof.key_averages():
        if e.device_type.name == "CUDA" or getattr(e, "self_device_time_total", 0):
            t = getattr(e, "self_device_time_total", 0.0) / n / 1e3
            if t > 0:
                per[e.key[:40]] = per.get(e.key[:40], 0.0) + t
    print(json.dumps(dict(T=T, D=D, config=cfg.__dict__, ms=per, total_ms=sum(per.values()), stats=stats)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--worker", choices=("warm", "time"), default=None)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return 0
    names = args.variants.split(",")
    envs = {}
    for name in names:
        patches, conf = VARIANTS[name]
        env = dict(os.environ, PYTHONPATH=f"{make_copy(name, patches)}:{os.environ.get('PYTHONPATH', '')}")
        env["RERANKERS_SCAN_CONFIG"] = ",".join(filter(None, [os.environ.get("RERANKERS_SCAN_CONFIG", ""), conf]))
        envs[name] = env
    cmd = [sys.executable, __file__, "--worker"]
    warm = {n: subprocess.Popen(cmd + ["warm"], env=envs[n], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for n in names}
    for n, p in warm.items():
        out, err = p.communicate()
        if p.returncode:
            print(f"{n}: warm-up failed: {err.strip().splitlines()[-1:] }", flush=True)
    rows = []
    for n in names:
        p = subprocess.run(cmd + ["time"], env=envs[n], capture_output=True, text=True)
        if p.returncode:
            print(f"{n}: FAILED {p.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["variant"] = n
        rows.append(r)
        ms = r["ms"]
        walk = {k: v for k, v in ms.items() if "scan" in k}
        st = r["stats"].get("bwd", {})
        print(f"{n:20s} total {r['total_ms']:.3f} ms  " + "  ".join(f"{k.strip('_')}:{v:.3f}" for k, v in
              sorted(walk.items())) + f"  bwd regs/spills {st.get('n_regs')}/{st.get('n_spills')}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ablate_scan_bwd.json"), "w") as f:
        json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Compile the Triton SSD kernels (rerankers/kernels/ssd/{forward,backward}.py) for sm_90 without a GPU and
report registers, spills and shared memory per kernel and chunk length (what ptxas made of them).

    PYTHONPATH=. python benchmarks/compile_ssd_sm90.py [--chunks 16 32 64 128] [--P 64] [--N 128]
        [--warps-fwd 4] [--warps-bwd 8] [--dtype bf16|fp32]

Run without TRITON_INTERPRET. Shapes: mamba2-130m's head dim 64 and state 128 by default.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compile_sm90 import report  # noqa: E402

log = logging.getLogger("compile_ssd_sm90")

ACT = {"x_ptr", "dt_ptr", "B_ptr", "C_ptr", "y_ptr", "dy_ptr", "dx_ptr", "ddt_ptr"}   # the activations' dtype
INT = {"seq_ptr"}
FLOAT_SCALARS = {"lim_lo", "lim_hi"}


def compile_kernel(fn, consts: dict, warps: int, act: str):
    sig, attrs, cst = {}, {}, {}
    for i, n in enumerate(fn.arg_names):
        if n in consts:
            sig[n] = "constexpr"
            cst[(i,)] = consts[n]
        elif n.endswith("_ptr"):
            sig[n] = "*i32" if n in INT else (f"*{act}" if n in ACT else "*fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif n in FLOAT_SCALARS:
            sig[n] = "fp32"
        else:
            sig[n] = "i32"
            if n in ("P", "N", "PN") or n.startswith("s_"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    return triton.compile(ASTSource(fn, sig, cst, attrs), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=warps))


def main() -> None:
    from rerankers.kernels.ssd import backward as bwd
    from rerankers.kernels.ssd import forward as fwd

    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", nargs="+", type=int, default=[16, 32, 64, 128])
    ap.add_argument("--P", type=int, default=64)
    ap.add_argument("--N", type=int, default=128)
    ap.add_argument("--warps-fwd", type=int, default=4)
    ap.add_argument("--warps-bwd", type=int, default=8)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--sass", default=None)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lowp = a.dtype == "bf16"
    base = dict(BP=a.P, BN=a.N, HAS_BIAS=True, SOFTPLUS=True, HAS_LIMIT=False, HAS_D=True, LOWP=lowp, LP_FP16=False)
    for q in a.chunks:
        consts = dict(base, Q=q)
        kernels = [("state", fwd._ssd_chunk_state_kernel, a.warps_fwd), ("scan", fwd._ssd_chunk_scan_kernel, a.warps_fwd),
                   ("dstart", bwd._ssd_dstart_kernel, a.warps_fwd), ("chunk_bwd", bwd._ssd_chunk_bwd_kernel, a.warps_bwd)]
        for name, fn, warps in kernels:
            k = compile_kernel(fn, {n: v for n, v in consts.items() if n in fn.arg_names}, warps, a.dtype)
            row = report(f"ssd_{name}_q{q}", k, a.sass)
            log.info("    shared %6d B", k.metadata.shared)
            del row
    for name, fn in (("passing", fwd._ssd_state_passing_kernel), ("passing_bwd", bwd._ssd_state_passing_bwd_kernel)):
        report(f"ssd_{name}", compile_kernel(fn, {"BLOCK": 1024}, 4, a.dtype), a.sass)


if __name__ == "__main__":
    main()

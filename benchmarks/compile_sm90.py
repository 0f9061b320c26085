"""Compile the Triton kernels for sm_90 on a machine without a GPU and report what ptxas made of them.

Triton's bundled ptxas compiles for Hopper anywhere, so registers, spills, barriers and shuffles
(the things that decide whether a layout change paid off) can be checked before any device time is
spent. Usage: ``PYTHONPATH=. python benchmarks/compile_sm90.py [--warps 4] [--block-t 8] [--sass DIR]``.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

log = logging.getLogger("compile_sm90")

PTR_INT = {"cu_ptr", "flag_ptr"}
# B / C in fp32: Mamba's mixer passes them so since the eighth session
PTR_FP32 = {"B_ptr", "C_ptr", "part_ptr", "A_ptr", "states_ptr", "hin_ptr", "send_ptr", "dts_ptr", "gin_ptr",
            "gout_ptr", "vec_ptr", "out_ptr", "dB_ptr", "dC_ptr", "dA_ptr", "dD_ptr", "dbias_ptr", "D_ptr", "bias_ptr",
            "dw_ptr", "db_ptr", "w_ptr", "b_ptr"}


def compile_kernel(fn, consts: dict, warps: int, dtype: str = "bf16", maxnreg: int = 0):
    """Compile ``fn`` with bf16 activations, fp32 parameters / buffers and B / C (as Mamba's mixer passes them),
    int32 scalars; pointers and unmarked integers get Triton's usual 16-divisibility unless the kernel says
    do_not_specialize
    (N = 16 is divisible by 16, so it is specialised as at run time; T, S and n_win are not assumed)."""
    sig, attrs, cst = {}, {}, {}
    nospec = set(getattr(fn, "do_not_specialize", ()) or ())
    names = fn.arg_names
    for i, n in enumerate(names):
        if n in consts:
            sig[n] = "constexpr"
            cst[(i,)] = consts[n]
        elif n.endswith("_ptr"):
            sig[n] = "*i32" if n in PTR_INT else ("*fp32" if n in PTR_FP32 else f"*{dtype}")
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[n] = "i32"
            if n not in nospec and n not in ("T", "S", "n_win") and not n.startswith("one"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    return triton.compile(ASTSource(fn, sig, cst, attrs), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=warps, **({"maxnreg": maxnreg} if maxnreg else {})))


def report(name: str, k, sass_dir: str | None) -> dict:
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    path = f"/tmp/{name}.cubin"
    with open(path, "wb") as f:
        f.write(k.asm["cubin"])
    usage = subprocess.run([os.path.join(bindir, "cuobjdump"), "--dump-resource-usage", path],
                           capture_output=True, text=True).stdout
    regs = int(re.search(r"REG:(\d+)", usage).group(1))
    # spills as ptxas reports them (Triton's n_spills on the GPU): compile the PTX again with -v
    ptx = f"/tmp/{name}.ptx"
    with open(ptx, "w") as f:
        f.write(k.asm["ptx"])
    arch = re.search(r"\.target\s+(sm_\w+)", k.asm["ptx"]).group(1)
    pv = subprocess.run([os.path.join(bindir, "ptxas"), f"-arch={arch}", "-v", ptx, "-o", "/dev/null"],
                        capture_output=True, text=True).stderr
    local = int(re.search(r"(\d+) bytes spill stores", pv).group(1)) if "spill stores" in pv else -1
    sass = subprocess.run([os.path.join(bindir, "cuobjdump"), "-sass", path], capture_output=True, text=True).stdout
    if sass_dir:
        os.makedirs(sass_dir, exist_ok=True)
        with open(os.path.join(sass_dir, name + ".sass"), "w") as f:
            f.write(sass)
    row = dict(kernel=name, regs=regs, spill_bytes=local, bar=sass.count("BAR.SYNC"), shfl=sass.count("SHFL"),
               ex2=sass.count("MUFU.EX2"), atom=len(re.findall(r"\bREDG?\.|\bATOMG?\.", sass)),
               instr=len(re.findall(r"^\s+/\*[0-9a-f]+\*/", sass, re.M)))
    log.info("%-22s regs %3d  spill %5d B  bar %3d  shfl %4d  ex2 %4d  red/atom %3d  instr %5d", *row.values())
    return row


def main() -> None:
    from rerankers.kernels.causal_conv1d import backward as conv_bwd
    from rerankers.kernels.causal_conv1d import forward as conv_fwd
    from rerankers.kernels.selective_scan import backward as scan_bwd
    from rerankers.kernels.selective_scan import backward_split as scan_split
    from rerankers.kernels.selective_scan import forward as scan_fwd
    ap = argparse.ArgumentParser()
    ap.add_argument("--warps", type=int, default=4)
    ap.add_argument("--block-t", type=int, default=8)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--bwd-history", type=int, default=4)
    ap.add_argument("--conv-rows", type=int, default=8, help="rows per chunk of the conv walks")
    ap.add_argument("--sass", default=None, help="folder to write each kernel's SASS into")
    ap.add_argument("--runtime-window", action="store_true", help="the walks' window at run time (as fitted)")
    ap.add_argument("--split-registers", type=int, default=128, help="maxnreg of the split backward walk (0: none)")
    ap.add_argument("--only", default="", help="comma-separated kernel names")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = dict(LOG_S=7, W=a.window, BT=a.block_t, BD=32 * a.warps, NP=16, EVEN_N=True, HAS_BIAS=True, SOFTPLUS=True,
                RUNTIME_WL=a.runtime_window)
    full = dict(base, HAS_D=True, HAS_Z=True, STORE_STATES=True)
    todo = [
        ("fwd_local", scan_fwd._scan_fwd_local_kernel, base, a.warps),
        ("fwd", scan_fwd._scan_fwd_kernel, full, a.warps),
        ("chain", scan_fwd._scan_chain_kernel, dict(REVERSE=False, G=8, BD=32, NP=16), 1),
        ("bwd_local", scan_bwd._scan_bwd_local_kernel, dict(base, HAS_Z=True), a.warps),
        ("bwd", scan_bwd._scan_bwd_kernel, dict(full, BH=a.bwd_history, BFLY=True), a.warps),
        ("bwd_split", scan_split._scan_bwd_split_kernel, dict(full, BH=a.bwd_history, BV=32 * a.warps, NH=8, ROUNDS=4,
                                                              EXTRA=0), a.warps, a.split_registers),
        ("states_recompute", scan_bwd._scan_states_kernel, base, a.warps),
        ("conv_fwd_walk", conv_fwd._conv_fwd_walk_kernel, dict(W=4, LOG_S=7, HAS_BIAS=True, SILU=True,
                                                               BT=a.conv_rows, R=16, BD=32 * a.warps), a.warps),
        ("conv_bwd_walk", conv_bwd._conv_bwd_walk_kernel, dict(W=4, LOG_S=7, HAS_BIAS=True, SILU=True,
                                                               BT=a.conv_rows, R=16, BD=32 * a.warps), a.warps),
    ]
    for name, fn, consts, warps, *regs in todo:
        if a.only and name not in a.only.split(","):
            continue
        k = compile_kernel(fn, {k: v for k, v in consts.items() if k in fn.arg_names}, warps, maxnreg=sum(regs))
        report(name, k, a.sass)


if __name__ == "__main__":
    main()

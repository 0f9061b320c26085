"""Host time of a Triton launch, through JITFunction.run and through rerankers.kernels.triton_utils.launch's direct
path, and of the scan's forward + backward at a shape where the GPU work is negligible (so the wall time of a
call is its host time). GPU only. Usage: ``PYTHONPATH=. python benchmarks/bench_launch.py [--out FILE]``."""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time

import torch

log = logging.getLogger("bench_launch")


def _per_call(fn, calls: int, repeats: int = 5) -> float:
    """Median over repeats of the host seconds per call (the stream is synchronised before and after)."""
    out = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        out.append((t1 - t0) / calls)
    return statistics.median(out)


def main() -> None:
    from rerankers.kernels import triton_utils
    from rerankers.kernels.selective_scan.op import _chain, selective_scan_triton
    from rerankers.kernels.varlen import cu_seqlens_from_lengths
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dev = "cuda"
    n_win, N, Dm = 4, 16, 64
    vec, A_t = torch.randn(n_win, N, Dm, device=dev), -torch.rand(N, Dm, device=dev)
    dts, flag = torch.rand(n_win, Dm, device=dev), torch.ones(n_win, dtype=torch.int32, device=dev)
    lens = [30, 50, 20]
    T, D = sum(lens), 128
    cu = cu_seqlens_from_lengths(lens).to(dev)
    xs = [torch.randn(T, D, device=dev, dtype=torch.bfloat16, requires_grad=True),
          (0.5 * torch.randn(T, D, device=dev)).bfloat16().requires_grad_(),
          (-torch.rand(D, N, device=dev) - 0.1).requires_grad_(), torch.randn(T, N, device=dev, requires_grad=True),
          torch.randn(T, N, device=dev, requires_grad=True), torch.randn(D, device=dev, requires_grad=True),
          torch.randn(T, D, device=dev, dtype=torch.bfloat16, requires_grad=True),
          torch.randn(D, device=dev, requires_grad=True)]

    def scan_step():  # (A row-major: the launchers copy it transposed, which Mamba's mixer's A spares them)
        for x in xs:
            x.grad = None
        y = selective_scan_triton(*xs, cu)
        y.sum().backward()

    rows = {}
    for mode in ("jit", "direct"):
        if mode == "jit":
            os.environ[triton_utils.LAUNCH_ENV] = "jit"
        else:
            os.environ.pop(triton_utils.LAUNCH_ENV, None)
        for _ in range(3):  # compile, then fill the direct path's cache
            _chain(vec, dts, flag, A_t, reverse=False)
            scan_step()
        rows[mode] = dict(launch_us=1e6 * _per_call(lambda: _chain(vec, dts, flag, A_t, reverse=False), 2000),
                          scan_fwd_bwd_us=1e6 * _per_call(scan_step, 200))
        log.info("%-6s one launch (the chain kernel, with its torch.empty_like) %.1f us; the scan's fwd+bwd "
                 "(7 launches, T=%d) %.1f us a call", mode, rows[mode]["launch_us"], T, rows[mode]["scan_fwd_bwd_us"])
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(card=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()

"""rerankers.kernels.triton_utils.launch: a launch whose specialisation compiled before goes to the compiled kernel
directly. On the GPU (compiled kernels): the scan's forward and backward through it equal the same calls through
Triton's JITFunction.run (bitwise, but for the gradients summed with atomics), for a second call (the cache's hit
path) and for a misaligned view (a new specialisation, which must not reuse the aligned compilation)."""
from __future__ import annotations

import math
import os

import pytest
import torch

from rerankers.kernels.varlen import cu_seqlens_from_lengths

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                                reason="the direct launch runs compiled kernels on CUDA (the interpreter takes "
                                       "Triton's own path)")


# gradients the backward sums over channels or tokens with atomic adds (their order is not fixed)
ATOMIC = ("A", "B", "C", "D", "bias")


def _scan_grads(u, delta, A, B, C, D, z, bias, cu):
    from rerankers.kernels.selective_scan.op import selective_scan_triton
    xs = [t.detach().requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]  # (the same storage: a misaligned
    # view stays misaligned)
    y = selective_scan_triton(*xs[:7], xs[7], cu)
    y.backward(torch.ones_like(y))
    return [y.detach(), *(x.grad for x in xs)]


def test_direct_launch_equals_jit_launch_bitwise(monkeypatch):
    from rerankers.kernels import triton_utils
    g = torch.Generator().manual_seed(0)
    lens = [37, 5, 120, 64, 1, 90]
    T, Dm, N = sum(lens), 256, 16
    cu = cu_seqlens_from_lengths(lens).cuda()

    def inputs(offset: int):
        r = lambda *s: torch.randn(*s, generator=g)
        # u and z as views that start `offset` elements into a buffer: 2 bytes each in bf16, so 1 misaligns them
        u = torch.cat([r(offset * Dm), r(T * Dm)]).cuda().bfloat16()[offset:offset + T * Dm].view(T, Dm) if offset \
            else r(T, Dm).cuda().bfloat16()
        z = r(T, Dm).cuda().bfloat16()
        A = -torch.exp(torch.rand(Dm, N, generator=g) * math.log(8)).cuda()
        return (u, (0.5 * r(T, Dm)).cuda().bfloat16(), A, r(T, N).cuda(), r(T, N).cuda(), r(Dm).cuda(), z,
                (0.5 * r(Dm) - 1.0).cuda())

    triton_utils._COMPILED.clear()
    for offset in (0, 0, 1):  # compile + first entry, the cache's hit, a misaligned u (another entry)
        xs = inputs(offset)
        monkeypatch.delenv(triton_utils.LAUNCH_ENV, raising=False)
        direct = _scan_grads(*xs, cu)
        monkeypatch.setenv(triton_utils.LAUNCH_ENV, "jit")
        jit = _scan_grads(*xs, cu)
        for name, a, b in zip(("y", "u", "delta", "A", "B", "C", "D", "z", "bias"), direct, jit):
            if name in ATOMIC:  # summed with atomics: the order of the adds, so the last bits, vary between runs
                err = ((a - b).norm() / b.norm()).item()  # norm-wise: a sum that cancels has no relative error
                assert err < 1e-5, f"{name} (offset {offset}): norm-wise {err:.2e} between the direct and jit launch"
            else:
                assert torch.equal(a, b), f"{name} differs between the direct and the jit launch (offset {offset})"
    misaligned = {k for k in triton_utils._COMPILED if (torch.bfloat16, False) in k[3]}
    assert misaligned, "the misaligned view made no entry of its own"
    assert len(triton_utils._COMPILED) >= 6, "the scan's kernels were not cached"

"""rerankers.kernels.custom_op through both ops: eager calls go through a plain autograd.Function (no
custom-op dispatch); they must give exactly what the custom ops give, and torch.compile must still
see the custom ops."""
from __future__ import annotations

import pytest
import torch

from rerankers.kernels import causal_conv1d_varlen
from rerankers.kernels.causal_conv1d.op import causal_conv1d_triton
from rerankers.kernels.selective_scan.op import ScanConfig, selective_scan_triton
from rerankers.kernels.varlen import cu_seqlens_from_lengths

CFG = ScanConfig(window=16, window_bwd=24, block_t=8, warps=1, warps_bwd=1, bwd_history=4)


def _both(fn, inputs):
    """(outputs, gradients) with the direct path and with the custom ops."""
    res = []
    for direct in (True, False):
        xs = [x.detach().clone().requires_grad_(True) for x in inputs]
        y = fn(*xs, direct=direct)
        g = torch.autograd.grad(y, xs, torch.ones_like(y) * torch.arange(y.numel()).view_as(y).sin())
        res.append((y.detach(), g))
    return res


def test_conv_direct_equals_custom_op():
    lengths = [3, 11, 1, 20]
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(sum(lengths), 40, generator=g), torch.randn(40, 4, generator=g), torch.randn(40, generator=g)
    cu = cu_seqlens_from_lengths(lengths)
    (y1, g1), (y0, g0) = _both(lambda x, w, b, direct: causal_conv1d_triton(x, w, b, cu, direct=direct), [x, w, b])
    assert torch.equal(y1, y0) and all(torch.equal(a, c) for a, c in zip(g1, g0))


def test_scan_direct_equals_custom_op():
    lengths = [7, 1, 30]
    T, Dm, N = sum(lengths), 8, 4
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(T, Dm, generator=g), 0.5 * torch.randn(T, Dm, generator=g), -torch.rand(Dm, N, generator=g) - 0.5,
          torch.randn(T, N, generator=g), torch.randn(T, N, generator=g), torch.randn(Dm, generator=g),
          torch.randn(T, Dm, generator=g), 0.5 * torch.randn(Dm, generator=g)]
    cu = cu_seqlens_from_lengths(lengths)
    (y1, g1), (y0, g0) = _both(lambda *a, direct: selective_scan_triton(*a, cu, config=CFG, direct=direct), xs)
    assert torch.equal(y1, y0)
    for a, c in zip(g1, g0):  # dA, dB, dC, dD, dbias are added with atomics: equal up to their order
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("direct", [True, False])
def test_compiled_graph_holds_the_custom_ops(direct):
    lengths = [5, 9]
    cu = cu_seqlens_from_lengths(lengths)
    x = torch.randn(sum(lengths), 8)
    w = torch.randn(8, 3)
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    f = torch.compile(lambda x: causal_conv1d_triton(x, w, None, cu, direct=direct), backend=backend,
                      fullgraph=True)
    torch.testing.assert_close(f(x), causal_conv1d_varlen(x, w, None, cu, backend="reference"))
    assert any("rerankers.causal_conv1d_fwd" in t for t in seen), seen

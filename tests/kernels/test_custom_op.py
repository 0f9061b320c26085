"""rerankers.kernels.custom_op through both ops: eager calls go through a plain autograd.Function (no
custom-op dispatch); they must give exactly what the custom ops give, and torch.compile must still
see the custom ops."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rerankers.kernels import causal_conv1d_varlen
from rerankers.kernels.add_rmsnorm.op import add_rmsnorm_triton
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


class _RecordOps(TorchDispatchMode):
    """Every call of a rerankers custom op (forward and backward), with its arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "rerankers":
            self.calls.append((func, args, kwargs or {}))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("recompute", [False, True])
def test_fake_kernels_give_the_real_outputs_metadata(recompute):
    """torch.compile plans memory from the fake kernels: their outputs' shapes, dtypes and strides must be the
    real ones (a scan backward returning dA as a transposed view failed under CUDA graphs on the GPU). Every op
    a forward + backward calls, fed the arguments it was called with, through torch.library.opcheck."""
    lengths = [7, 1, 30]
    T, Dm, N = sum(lengths), 8, 4
    cu = cu_seqlens_from_lengths(lengths)
    g = torch.Generator().manual_seed(2)
    xz = torch.randn(T, 2 * Dm, generator=g, requires_grad=True)
    w, b = torch.randn(Dm, 4, generator=g, requires_grad=True), torch.randn(Dm, generator=g, requires_grad=True)
    rest = [0.5 * torch.randn(T, Dm, generator=g), -torch.rand(Dm, N, generator=g) - 0.5,
            torch.randn(T, N, generator=g), torch.randn(T, N, generator=g), torch.randn(Dm, generator=g)]
    rest = [t.requires_grad_() for t in rest]
    norm_w = torch.randn(Dm, generator=g, requires_grad=True)
    cfg = replace(CFG, recompute_states=recompute)
    with _RecordOps() as rec:
        x, z = xz.chunk(2, dim=-1)  # strided views, as a Mamba block's in_proj output
        u = causal_conv1d_triton(x, w, b, cu, direct=False)
        y = selective_scan_triton(u, rest[0], rest[1], rest[2], rest[3], rest[4], z, None, cu, config=cfg,
                                  direct=False)
        out, res = add_rmsnorm_triton(y, x, norm_w, 1e-5, direct=False)
        (out.square().sum() + res.sum()).backward()
    names = sorted({str(f) for f, _, _ in rec.calls})
    assert names == sorted(f"rerankers.{k}_{d}.default" for k in ("causal_conv1d", "selective_scan", "add_rmsnorm")
                           for d in ("fwd", "bwd")), names
    for func, args, kwargs in rec.calls:
        args = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
        torch.library.opcheck(func, tuple(args), kwargs, test_utils="test_faketensor")

"""rerankers.kernels.causal_conv1d: Triton kernels (TRITON_INTERPRET=1 on the CPU) against the references."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rerankers.kernels import causal_conv1d_ref_varlen, causal_conv1d_varlen
from rerankers.kernels.causal_conv1d.op import ConvConfig, causal_conv1d_triton
from rerankers.kernels.varlen import cu_seqlens_from_lengths


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def per_sequence_conv1d(x, w, b, cu, activation):
    """Oracle: torch's conv1d with left padding W-1, one sequence at a time."""
    W = w.shape[1]
    outs = []
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if e == s:
            continue
        seq = x[s:e].T[None]  # (1, D, L)
        o = F.conv1d(F.pad(seq, (W - 1, 0)), w[:, None, :], b, groups=x.shape[1])[0].T
        outs.append(F.silu(o) if activation else o)
    return torch.cat(outs)


@pytest.mark.parametrize("W,activation", [(1, "silu"), (2, None), (3, "silu"), (4, "silu"), (4, None)])
def test_triton_equals_reference_and_torch_conv(W, activation):
    g = torch.Generator().manual_seed(W)
    # lengths {1, W-1 (empty for W=1), W, W+1, 31, 32, 33, 70}: sequence starts at every position of
    # the interpreter's 8-row chunks and across its row blocks (8 chunks each, 3 blocks per call)
    lengths = [1, W - 1, W, W + 1, 31, 32, 33, 70]
    T, D = sum(lengths), 40  # two channel blocks of 32 under the interpreter (masked tail)
    cu = cu_seqlens_from_lengths(lengths)
    x = torch.randn(T, D, generator=g, requires_grad=True)
    w = torch.randn(D, W, generator=g, requires_grad=True)
    b = torch.randn(D, generator=g, requires_grad=True)
    y = causal_conv1d_varlen(x, w, b, cu, activation=activation, backend="triton")
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    yr = causal_conv1d_ref_varlen(xr, wr, br, cu, activation=activation)
    assert rel(yr, per_sequence_conv1d(xr, wr, br, cu, activation)) < 1e-12
    assert rel(y, yr) <= 1e-5
    gy = torch.randn(y.shape, generator=g)
    grads, grads_r = torch.autograd.grad(y, (x, w, b), gy), torch.autograd.grad(yr, (xr, wr, br), gy.double())
    for name, a, c in zip("xwb", grads, grads_r):
        assert rel(a, c) <= 1e-5, name


@pytest.mark.parametrize("floor", [1, 12])
def test_more_sequences_than_the_search_floor_covers(monkeypatch, floor):
    """520 sequences, some empty (> 2**9 - 1: one halving past the default floor of the search over
    cu_seqlens), with the floor off and above the depth S needs; output and every gradient against the
    per-sequence oracle."""
    from rerankers.kernels import triton_utils
    monkeypatch.setattr(triton_utils, "LOG_S_MIN", floor)
    g = torch.Generator().manual_seed(6)
    lengths = torch.randint(0, 3, (520,), generator=g).tolist()
    cu = cu_seqlens_from_lengths(lengths)
    assert triton_utils.log_s(len(lengths)) == max(10, floor)
    T, D = sum(lengths), 8
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in ((T, D), (D, 4), (D,)))
    y = causal_conv1d_varlen(x.float(), w.float(), b.float(), cu, backend="triton")
    yr = per_sequence_conv1d(x, w, b, cu, "silu")
    assert rel(y, yr) <= 1e-5
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    xf, wf, bf = (t.detach().float().requires_grad_() for t in (x, w, b))
    got = torch.autograd.grad(causal_conv1d_varlen(xf, wf, bf, cu, backend="triton"), (xf, wf, bf), gy.float())
    for name, a, c in zip("xwb", got, torch.autograd.grad(yr, (x, w, b), gy)):
        assert rel(a, c) <= 1e-5, name


def test_no_bias_no_leak_and_bf16():
    lengths = [5, 1, 12, 9]
    cu = cu_seqlens_from_lengths(lengths)
    T, D = sum(lengths), 16
    x = torch.randn(T, D, requires_grad=True)
    w = torch.randn(D, 4, requires_grad=True)
    y = causal_conv1d_varlen(x, w, None, cu, backend="triton")
    assert rel(y, causal_conv1d_ref_varlen(x, w, None, cu)) <= 1e-5
    a, b = cu[2].item(), cu[3].item()
    (gx,) = torch.autograd.grad(y[a:b].sum(), (x,))
    assert torch.count_nonzero(torch.cat([gx[:a], gx[b:]])) == 0
    assert torch.count_nonzero(gx[a:b]) > 0
    xb = x.detach().bfloat16().requires_grad_()
    yb = causal_conv1d_varlen(xb, w, None, cu, backend="triton")
    assert yb.dtype == torch.bfloat16 and rel(yb, y) < 1e-2
    (gxb,) = torch.autograd.grad(yb.float().sum(), (xb,))
    assert gxb.dtype == torch.bfloat16


def test_conv_custom_op_compiles():
    cu = cu_seqlens_from_lengths([6, 10])
    x = torch.randn(16, 8, requires_grad=True)
    w = torch.randn(8, 4, requires_grad=True)

    def f(x, w):
        return causal_conv1d_varlen(x, w, None, cu, backend="triton").square().sum()
    cf = torch.compile(f, backend="aot_eager", fullgraph=True)
    l1, l0 = cf(x, w), f(x, w)
    assert torch.allclose(l1, l0)
    for a, b in zip(torch.autograd.grad(l1, (x, w)), torch.autograd.grad(l0, (x, w))):
        assert torch.allclose(a, b)


def test_conv_config_other_tiles_and_checks():
    # chunks of 4 rows forward and 16 backward, two row blocks aimed at: other walk splits than the default
    lengths = [2, 9, 1, 17, 4]
    cu = cu_seqlens_from_lengths(lengths)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(sum(lengths), 16, generator=g, requires_grad=True)
    w = torch.randn(16, 4, generator=g, requires_grad=True)
    cfg = ConvConfig(block_t=4, warps=1, row_blocks=2, block_t_bwd=16, warps_bwd=1, row_blocks_bwd=2)
    y = causal_conv1d_triton(x, w, None, cu, config=cfg)
    yr = causal_conv1d_ref_varlen(x, w, None, cu)
    assert rel(y, yr) <= 1e-5
    for a, c in zip(torch.autograd.grad(y.sum(), (x, w)), torch.autograd.grad(yr.sum(), (x, w))):
        assert rel(a, c) <= 1e-5
    for bad, msg in [(ConvConfig(block_t=12), "block_t must be a power of two in 1..64"),
                     (ConvConfig(block_t_bwd=64), "block_t_bwd must be a power of two in 1..32")]:
        with pytest.raises(ValueError, match=msg):
            causal_conv1d_triton(x, w, None, cu, config=bad)

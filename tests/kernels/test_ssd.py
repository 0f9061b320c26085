"""rerankers.kernels.ssd: the chunked varlen SSD (Mamba-2's scan) against the recurrent reference.

Oracle: an independent direct fp64 loop over time written here (one sequence, plain floats), then the
recurrent varlen reference, then the chunked form: outputs and every gradient by name, at fp64 and
fp32 tolerances, over ragged packs (length 1, lengths around and across the chunk size, an empty
sequence), chunk sizes that cut sequences anywhere; and exactly zero gradient across sequences.
"""
from __future__ import annotations

import math

import pytest
import torch

from rerankers.errors import KernelBackendError
from rerankers.kernels import ssd_chunked_varlen, ssd_ref_varlen, ssd_varlen
from rerankers.kernels.varlen import cu_seqlens_from_lengths

NAMES = ("x", "dt", "A", "B", "C", "D", "dt_bias")
H, P, G, N = 4, 3, 2, 5            # 4 heads of 3 channels, 2 groups of B/C (2 heads each), state 5
Q = 4                              # chunk size of most cases
LENGTHS = [1, Q - 1, Q, Q + 1, 0, 3 * Q + 2, 1, 2 * Q]
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


def make(T: int, seed: int, dtype=torch.float64, grad: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    xs = {"x": r(T, H, P), "dt": 0.7 * r(T, H), "A": -torch.exp(torch.rand(H, generator=g, dtype=torch.float64) * 2.5),
          "B": r(T, G, N), "C": r(T, G, N), "D": r(H), "dt_bias": 0.5 * r(H) - 0.5}
    return {k: v.to(dtype).requires_grad_(grad) for k, v in xs.items()}


def direct_loop(x, dt, A, B, C, D, dt_bias, softplus=True, limit=(0.0, math.inf)):
    """One sequence, fp64, written as plainly as possible: h[h, p, n] per head, head h reads group h // (H // G)."""
    T = x.shape[0]
    y = torch.zeros(T, H, P, dtype=torch.float64)
    for h in range(H):
        g = h // (H // G)
        state = [[0.0] * N for _ in range(P)]
        for t in range(T):
            d = float(dt[t, h]) + (float(dt_bias[h]) if dt_bias is not None else 0.0)
            if softplus:
                d = math.log1p(math.exp(d))
            d = min(max(d, limit[0]), limit[1])
            decay = math.exp(d * float(A[h]))
            for p in range(P):
                acc = 0.0
                for n in range(N):
                    state[p][n] = decay * state[p][n] + d * float(x[t, h, p]) * float(B[t, g, n])
                    acc += state[p][n] * float(C[t, g, n])
                y[t, h, p] = acc + (float(D[h]) * float(x[t, h, p]) if D is not None else 0.0)
    return y


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def outputs_and_grads(fn, xs: dict, cu: torch.Tensor, seed: int = 7, **kw) -> dict[str, torch.Tensor]:
    y = fn(**xs, cu_seqlens=cu, **kw)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(y.dtype)
    grads = torch.autograd.grad((y * w).sum(), list(xs.values()))
    return {"y": y, **{f"d{k}": g for k, g in zip(xs, grads)}}


def test_reference_matches_direct_loop_one_sequence():
    xs = make(9, seed=0, grad=False)
    cu = cu_seqlens_from_lengths([9])
    for opt in [dict(), dict(D=None, dt_bias=None)]:
        args = xs | opt
        assert rel(ssd_ref_varlen(**args, cu_seqlens=cu), direct_loop(**args)) < 1e-12
    y = ssd_ref_varlen(**xs, cu_seqlens=cu, dt_softplus=False, dt_limit=(0.05, 0.6))
    assert rel(y, direct_loop(**xs, softplus=False, limit=(0.05, 0.6))) < 1e-12


@pytest.mark.parametrize("chunk_size", [1, 3, Q, 7, 64])
def test_chunked_matches_reference_fp64_outputs_and_every_gradient(chunk_size):
    xs = make(sum(LENGTHS), seed=1)
    cu = cu_seqlens_from_lengths(LENGTHS)
    ref = outputs_and_grads(ssd_ref_varlen, xs, cu)
    got = outputs_and_grads(ssd_chunked_varlen, xs, cu, chunk_size=chunk_size)
    for name in ref:
        assert rel(got[name], ref[name]) < TOL[torch.float64], name


def test_chunked_fp32_matches_the_fp64_reference_outputs_and_every_gradient():
    xs64 = make(sum(LENGTHS), seed=2)
    xs32 = {k: v.detach().float().requires_grad_() for k, v in xs64.items()}
    cu = cu_seqlens_from_lengths(LENGTHS)
    ref = outputs_and_grads(ssd_ref_varlen, xs64, cu)
    for fn, kw in ((ssd_chunked_varlen, {"chunk_size": Q}), (ssd_ref_varlen, {})):
        got = outputs_and_grads(fn, xs32, cu, **kw)
        for name in ref:
            assert got[name].dtype == torch.float32
            assert rel(got[name], ref[name]) < TOL[torch.float32], (fn.__name__, name)


def test_options_dt_limit_no_softplus_no_D_match_reference():
    xs = make(sum(LENGTHS), seed=3)
    cu = cu_seqlens_from_lengths(LENGTHS)
    for dropped, kw in [(("D", "dt_bias"), {}), ((), {"dt_limit": (0.1, 0.5)}),
                        ((), {"dt_softplus": False, "dt_limit": (0.0, 0.8)})]:
        args = {k: v for k, v in xs.items() if k not in dropped}
        kw = {**kw, **dict.fromkeys(dropped)}
        ref = outputs_and_grads(ssd_ref_varlen, args, cu, **kw)
        got = outputs_and_grads(ssd_chunked_varlen, args, cu, chunk_size=Q, **kw)
        for name in ref:
            assert rel(got[name], ref[name]) < TOL[torch.float64], (dropped, kw, name)


@pytest.mark.parametrize("backend,chunk_size", [("chunked", Q), ("chunked", 5), ("reference", Q)])
def test_loss_on_one_sequence_gives_exactly_zero_gradient_to_the_others(backend, chunk_size):
    lengths = [3, 6, 9, 2, 7]  # with Q = 4 or 5, sequences start and end inside chunks and span several
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(sum(lengths), seed=4, dtype=torch.float32)
    for target in range(len(lengths)):
        y = ssd_varlen(**xs, cu_seqlens=cu, chunk_size=chunk_size, backend=backend)
        lo, hi = int(cu[target]), int(cu[target + 1])
        grads = torch.autograd.grad((y[lo:hi] ** 2).sum(), list(xs.values()))
        for name, g in zip(xs, grads):
            if g.shape[0] != y.shape[0]:  # A, D, dt_bias: shared parameters
                continue
            others = torch.cat([g[:lo], g[hi:]])
            assert torch.count_nonzero(others) == 0, (target, name)
            assert g[lo:hi].abs().sum() > 0, (target, name)


def test_packed_equals_each_sequence_alone():
    cu = cu_seqlens_from_lengths(LENGTHS)
    xs = make(sum(LENGTHS), seed=5, grad=False)
    packed = ssd_chunked_varlen(**xs, cu_seqlens=cu, chunk_size=Q)
    for i, n in enumerate(LENGTHS):
        lo = int(cu[i])
        alone = {k: (v[lo:lo + n] if v.shape[0] == packed.shape[0] else v) for k, v in xs.items()}
        y = ssd_chunked_varlen(**alone, cu_seqlens=cu_seqlens_from_lengths([n]), chunk_size=Q)
        torch.testing.assert_close(packed[lo:lo + n], y, rtol=0, atol=1e-12)


def test_autocast_does_not_lower_the_precision_and_bf16_inputs_stay_close():
    cu = cu_seqlens_from_lengths(LENGTHS)
    xs = make(sum(LENGTHS), seed=6, dtype=torch.float32, grad=False)
    plain = ssd_chunked_varlen(**xs, cu_seqlens=cu, chunk_size=Q)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = ssd_chunked_varlen(**xs, cu_seqlens=cu, chunk_size=Q)
    assert under.dtype == torch.float32 and torch.equal(under, plain)
    bf = ssd_chunked_varlen(**{k: v.bfloat16() for k, v in xs.items()}, cu_seqlens=cu, chunk_size=Q)
    assert bf.dtype == torch.bfloat16 and rel(bf, plain) < 3e-2


def test_dispatch_checks_arguments_and_backends():
    xs = make(6, seed=8, grad=False)
    cu = cu_seqlens_from_lengths([2, 4])
    assert torch.equal(ssd_varlen(**xs, cu_seqlens=cu, backend="reference"), ssd_ref_varlen(**xs, cu_seqlens=cu))
    torch.testing.assert_close(ssd_varlen(**xs, cu_seqlens=cu), ssd_ref_varlen(**xs, cu_seqlens=cu))
    with pytest.raises(KernelBackendError, match="SSD backend must be one of"):
        ssd_varlen(**xs, cu_seqlens=cu, backend="mamba_ssm")
    with pytest.raises(ValueError, match=r"B must be \(T=6, G, N\) with G dividing H=4"):
        ssd_varlen(**(xs | {"B": xs["B"][:, :1].expand(6, 3, N)}), cu_seqlens=cu)
    with pytest.raises(ValueError, match=r"dt must have shape \(6, 4\)"):
        ssd_varlen(**(xs | {"dt": xs["dt"][:, :2]}), cu_seqlens=cu)
    with pytest.raises(ValueError, match="x must be"):
        ssd_varlen(**(xs | {"x": xs["x"][:, 0]}), cu_seqlens=cu)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        ssd_chunked_varlen(**xs, cu_seqlens=cu, chunk_size=0)
    with pytest.raises(ValueError, match="must start at 0 and end at T=6"):
        ssd_chunked_varlen(**xs, cu_seqlens=cu_seqlens_from_lengths([2, 3]))
    empty = make(0, seed=9, grad=False)
    assert ssd_varlen(**empty, cu_seqlens=cu_seqlens_from_lengths([0])).shape == (0, H, P)

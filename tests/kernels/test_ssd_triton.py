"""rerankers.kernels.ssd.op: the Triton varlen SSD (run by the interpreter on the CPU) against the recurrent
reference (fp64 oracle) and the chunked PyTorch form: outputs and every gradient by name, fp32 and bf16
tolerances, ragged packs (lengths 1, Q-1, Q, Q+1, an empty sequence, several chunks), chunk sizes that cut
sequences anywhere, the dt options, and exactly zero gradient across sequences. Tiny shapes (interpreter).
"""
from __future__ import annotations

import pytest
import torch

from rerankers.kernels import ssd_chunked_varlen, ssd_ref_varlen, ssd_varlen
from rerankers.kernels.ssd.op import BACKWARDS, MAX_CHUNK, ssd_triton_varlen, triton_chunk_size
from rerankers.kernels.varlen import cu_seqlens_from_lengths

H, P, G, N = 4, 3, 2, 5            # 4 heads of 3 channels, 2 groups of B/C (2 heads each), state 5
Q = 4
LENGTHS = [1, Q - 1, Q, Q + 1, 0, 3 * Q + 2, 1, 2 * Q]
TOL32 = 2e-5                       # fp32 inputs vs the fp64 reference (IEEE fp32 dots)
TOL16 = 1.5e-2                     # bf16 inputs vs the fp32 reference on the same bf16 values (measured ≤ 6.1e-3)


def make(T: int, seed: int, dtype=torch.float32, grad: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    xs = {"x": r(T, H, P), "dt": 0.7 * r(T, H), "A": -torch.exp(torch.rand(H, generator=g, dtype=torch.float64) * 2.5),
          "B": r(T, G, N), "C": r(T, G, N), "D": r(H), "dt_bias": 0.5 * r(H) - 0.5}
    return {k: v.to(dtype).requires_grad_(grad) for k, v in xs.items()}


def like(xs: dict, dtype) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(dtype).requires_grad_() for k, v in xs.items()}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def outputs_and_grads(fn, xs: dict, cu: torch.Tensor, seed: int = 7, **kw) -> dict[str, torch.Tensor]:
    y = fn(**xs, cu_seqlens=cu, **kw)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(y.dtype)
    leaves = [v for v in xs.values() if v is not None]
    grads = torch.autograd.grad((y * w).sum(), leaves)
    names = [k for k, v in xs.items() if v is not None]
    return {"y": y, **{f"d{k}": g for k, g in zip(names, grads)}}


@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("chunk_size", [Q, 8])
def test_fp32_matches_the_fp64_reference_and_the_chunked_form_every_gradient(chunk_size, backward):
    xs32 = make(sum(LENGTHS), seed=1)
    cu = cu_seqlens_from_lengths(LENGTHS)
    ref = outputs_and_grads(ssd_ref_varlen, like(xs32, torch.float64), cu)
    chunked = outputs_and_grads(ssd_chunked_varlen, like(xs32, torch.float32), cu, chunk_size=chunk_size)
    got = outputs_and_grads(ssd_triton_varlen, xs32, cu, chunk_size=chunk_size, backward=backward)
    assert set(got) == {"y", "dx", "ddt", "dA", "dB", "dC", "dD", "ddt_bias"}
    for name in ref:
        assert got[name].dtype == torch.float32, name
        assert rel(got[name], ref[name]) < TOL32, (name, rel(got[name], ref[name]))
        assert rel(got[name], chunked[name]) < TOL32, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_inputs_match_the_fp32_reference_every_gradient(dtype):
    xs = make(sum(LENGTHS), seed=2, dtype=dtype)
    cu = cu_seqlens_from_lengths(LENGTHS)
    ref = outputs_and_grads(ssd_ref_varlen, like(xs, torch.float32), cu)
    for backward in BACKWARDS:
        got = outputs_and_grads(ssd_triton_varlen, xs, cu, chunk_size=Q, backward=backward)
        for name in ref:
            assert got[name].dtype == dtype, name
            assert rel(got[name], ref[name]) < TOL16, (backward, name, rel(got[name], ref[name]))


def test_chunk_size_rounding_and_an_unaligned_chunk_size_give_the_same_result():
    assert [triton_chunk_size(q, 100) for q in (1, 4, 5, 7, 8, 64, 256)] == [1, 4, 4, 4, 8, 64, MAX_CHUNK]
    assert triton_chunk_size(10 ** 6, 10 ** 6) == MAX_CHUNK
    assert triton_chunk_size(256, 3) == 4
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        triton_chunk_size(0, 10)
    xs = make(sum(LENGTHS), seed=3, grad=False)
    cu = cu_seqlens_from_lengths(LENGTHS)
    ref = ssd_ref_varlen(**like(xs, torch.float64), cu_seqlens=cu)
    for q in (1, 5, 64):  # 5 -> 4; 64: one chunk (T = 34) holding every sequence
        assert rel(ssd_triton_varlen(**xs, cu_seqlens=cu, chunk_size=q), ref) < TOL32, q


@pytest.mark.parametrize("backward", BACKWARDS)
def test_options_dt_limit_no_softplus_no_D_no_bias_match_reference(backward):
    xs = make(sum(LENGTHS), seed=4)
    cu = cu_seqlens_from_lengths(LENGTHS)
    for dropped, kw in [(("D", "dt_bias"), {}), ((), {"dt_limit": (0.1, 0.5)}),
                        ((), {"dt_softplus": False, "dt_limit": (0.0, 0.8)})]:
        args = {k: (None if k in dropped else v) for k, v in xs.items()}
        ref = outputs_and_grads(ssd_ref_varlen, {k: (None if v is None else v.detach().double().requires_grad_())
                                                 for k, v in args.items()}, cu, **kw)
        got = outputs_and_grads(ssd_triton_varlen, args, cu, chunk_size=Q, backward=backward, **kw)
        assert set(got) == set(ref)
        for name in ref:
            assert rel(got[name], ref[name]) < TOL32, (dropped, kw, name)


@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("chunk_size", [Q, 8])
def test_loss_on_one_sequence_gives_exactly_zero_gradient_to_the_others(chunk_size, backward):
    lengths = [3, 6, 9, 2, 7]  # with Q = 4 or 8, sequences start and end inside chunks and span several
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(sum(lengths), seed=5)
    for target in range(len(lengths)):
        y = ssd_triton_varlen(**xs, cu_seqlens=cu, chunk_size=chunk_size, backward=backward)
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
    xs = make(sum(LENGTHS), seed=6, grad=False)
    packed = ssd_triton_varlen(**xs, cu_seqlens=cu, chunk_size=Q)
    for i, n in enumerate(LENGTHS):
        lo = int(cu[i])
        alone = {k: (v[lo:lo + n] if v.shape[0] == packed.shape[0] else v) for k, v in xs.items()}
        y = ssd_triton_varlen(**alone, cu_seqlens=cu_seqlens_from_lengths([n]), chunk_size=Q)
        torch.testing.assert_close(packed[lo:lo + n], y, rtol=1e-5, atol=1e-6)


def test_strided_inputs_some_gradients_only_and_autocast():
    lengths = [5, 2, 6]
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(sum(lengths), seed=7, grad=False)
    T = sum(lengths)
    # x and B, C as slices of wider projections (row strides the kernels must honour)
    wide = torch.randn(T, H * P + 2 * G * N + 3)
    x = wide[:, :H * P].view(T, H, P).copy_(xs["x"])
    Bv = wide[:, H * P:H * P + G * N].view(T, G, N).copy_(xs["B"])
    Cv = wide[:, H * P + G * N:H * P + 2 * G * N].view(T, G, N).copy_(xs["C"])
    assert not x.is_contiguous() and not Bv.is_contiguous()
    strided = {**xs, "x": x, "B": Bv, "C": Cv}
    ref = ssd_ref_varlen(**like(xs, torch.float64), cu_seqlens=cu)
    assert rel(ssd_triton_varlen(**strided, cu_seqlens=cu, chunk_size=Q), ref) < TOL32
    plain = ssd_triton_varlen(**xs, cu_seqlens=cu, chunk_size=Q)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the kernels ignore autocast: fp32 in, fp32 out
        under = ssd_triton_varlen(**xs, cu_seqlens=cu, chunk_size=Q)
    assert under.dtype == torch.float32 and torch.equal(under, plain)
    for backward in BACKWARDS:  # only x and A require grad
        args = {**xs, "x": xs["x"].clone().requires_grad_(), "A": xs["A"].clone().requires_grad_()}
        y = ssd_triton_varlen(**args, cu_seqlens=cu, chunk_size=Q, backward=backward)
        dx, dA = torch.autograd.grad(y.sum(), [args["x"], args["A"]])
        r64 = like(xs, torch.float64)
        rx, rA = torch.autograd.grad(ssd_ref_varlen(**r64, cu_seqlens=cu).sum(), [r64["x"], r64["A"]])
        assert rel(dx, rx) < TOL32 and rel(dA, rA) < TOL32, backward


def test_dispatch_backends_fp64_and_empty_inputs():
    lengths = [2, 0, 4]
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(6, seed=8, grad=False)
    got = ssd_varlen(**xs, cu_seqlens=cu, chunk_size=Q, backend="triton")
    assert torch.equal(got, ssd_triton_varlen(**xs, cu_seqlens=cu, chunk_size=Q))
    assert rel(got, ssd_ref_varlen(**like(xs, torch.float64), cu_seqlens=cu)) < TOL32
    # "auto" on CPU tensors is the chunked PyTorch form (the Triton SSD is its pick for CUDA tensors only)
    assert torch.equal(ssd_varlen(**xs, cu_seqlens=cu, chunk_size=Q), ssd_chunked_varlen(**xs, cu_seqlens=cu,
                                                                                         chunk_size=Q))
    # fp64 inputs run the chunked form (exactly)
    x64 = {k: v.double() for k, v in xs.items()}
    assert torch.equal(ssd_triton_varlen(**x64, cu_seqlens=cu, chunk_size=Q),
                       ssd_chunked_varlen(**x64, cu_seqlens=cu, chunk_size=Q))
    empty = make(0, seed=9, grad=False)
    assert ssd_varlen(**empty, cu_seqlens=cu_seqlens_from_lengths([0]), backend="triton").shape == (0, H, P)
    assert ssd_varlen(**empty, cu_seqlens=cu_seqlens_from_lengths([]), backend="triton").shape == (0, H, P)
    with pytest.raises(ValueError, match="backward must be one of"):
        ssd_triton_varlen(**xs, cu_seqlens=cu, backward="nope")
    with pytest.raises(ValueError, match="must start at 0 and end at T=6"):
        ssd_triton_varlen(**xs, cu_seqlens=cu_seqlens_from_lengths([2, 3]))


def test_what_the_forward_keeps_for_the_backward():
    """No (Q, Q) block is kept: the Triton backward keeps the inputs plus (T,) + 2 (T, H) + (T/Q, H, P, N) +
    (T/Q, H); the recompute backward the inputs only."""
    cu = cu_seqlens_from_lengths(LENGTHS)
    T, K = sum(LENGTHS), -(-sum(LENGTHS) // Q)
    xs = make(T, seed=10)
    inputs = {tuple(v.shape) for v in xs.values()} | {tuple(cu.shape)}
    for backward, extra in (("triton", [(T,), (T, H), (T, H), (K, H, P, N), (K, H)]), ("chunked", [])):
        y = ssd_triton_varlen(**xs, cu_seqlens=cu, chunk_size=Q, backward=backward)
        saved = [tuple(t.shape) for t in y.grad_fn.saved_tensors]
        assert set(saved[:8]) == inputs and saved[8:] == extra, backward

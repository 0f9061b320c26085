"""rerankers.kernels.selective_scan: Triton kernels (TRITON_INTERPRET=1 on the CPU) against the references.

Oracle: an independent direct fp64 loop over time written here (mamba_ssm ``selective_scan_ref``
semantics for one sequence), then the pure-PyTorch varlen reference, then the Triton kernels.
"""
from __future__ import annotations

import math
from dataclasses import fields, replace

import pytest
import torch
import torch.nn.functional as F

from rerankers.kernels import selective_scan_ref_varlen, selective_scan_varlen
from rerankers.kernels.selective_scan.op import (
    INTERPRET_CONFIG,
    RECOMPUTE_ENV,
    WINDOW_MAX,
    ScanConfig,
    _fit_window,
    backward_window,
    default_config,
    forward_window,
    pick_window,
    recompute_chunk_states,
    resident_programs,
    selective_scan_triton,
)
from rerankers.kernels.varlen import cu_seqlens_from_lengths

# small windows so that tiny shapes cross chunk (8 tokens) and window edges, with other windows in
# the backward than in the forward; 32 channels per program (one warp)
CFG = ScanConfig(window=16, window_bwd=24, block_t=8, warps=1, warps_bwd=1, bwd_history=4)
# windows of one or two 4-token chunks: long chains of carried windows (more than the carry
# pass's group of 8)
CFG_SMALL = ScanConfig(window=8, window_bwd=4, block_t=4, warps=1, warps_bwd=1, bwd_history=2)
# one window holds several whole sequences
CFG_WIDE = ScanConfig(window=64, window_bwd=128, block_t=8, warps=1, warps_bwd=1, bwd_history=8)
# the launchers' own windows (small at these T)
CFG_AUTO = ScanConfig(window=0, window_bwd=0, block_t=8, warps=1, warps_bwd=1, bwd_history=4)
# the backward walk with each channel's states over two lanes (16 channels a warp)
CFG_SPLIT = replace(CFG, bwd_split=True)
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make(T: int, Dm: int, N: int, seed: int, dtype=torch.float32, grad: bool = True) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    xs = [r(T, Dm), 0.5 * r(T, Dm), -torch.exp(torch.rand(Dm, N, generator=g, dtype=torch.float64) * math.log(8)),
          r(T, N), r(T, N), r(Dm), r(T, Dm), 0.5 * r(Dm) - 1.0]
    return [x.to(dtype).requires_grad_(grad) for x in xs]


def direct_loop(u, delta, A, B, C, D, z, delta_bias, softplus=True):
    """One sequence, fp64, mamba_ssm selective_scan_ref semantics, written as plainly as possible."""
    T, Dm = u.shape
    N = A.shape[1]
    y = torch.zeros(T, Dm, dtype=torch.float64)
    for d in range(Dm):
        h = [0.0] * N
        for t in range(T):
            dt = float(delta[t, d]) + (float(delta_bias[d]) if delta_bias is not None else 0.0)
            if softplus:
                dt = math.log1p(math.exp(dt)) if dt <= 20 else dt
            acc = 0.0
            for n in range(N):
                h[n] = math.exp(dt * float(A[d, n])) * h[n] + dt * float(B[t, n]) * float(u[t, d])
                acc += h[n] * float(C[t, n])
            if D is not None:
                acc += float(D[d]) * float(u[t, d])
            if z is not None:
                zz = float(z[t, d])
                acc *= zz / (1.0 + math.exp(-zz))
            y[t, d] = acc
    return y


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def assert_matches_reference(y: torch.Tensor, xs: list[torch.Tensor], cu: torch.Tensor, gy_seed: int,
                             what: str = "") -> None:
    """``y`` (the Triton scan of ``xs``) and the gradient of every input under a random output gradient
    (seed ``gy_seed``) equal the fp64 reference to 1e-5 relative; each gradient has its input's dtype."""
    xr = [x.detach().double().requires_grad_() for x in xs]
    yr = selective_scan_ref_varlen(*xr, cu)
    assert rel(y, yr) <= 1e-5, f"y{what}: {rel(y, yr):.2e}"
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(gy_seed))
    for name, a, b in zip(NAMES, torch.autograd.grad(y, xs, gy), torch.autograd.grad(yr, xr, gy.double())):
        assert a.dtype == xs[NAMES.index(name)].dtype
        assert rel(a, b) <= 1e-5, f"d{name}{what}: {rel(a, b):.2e}"


def test_reference_matches_direct_loop_one_sequence():
    xs = make(11, 3, 4, seed=0, dtype=torch.float64, grad=False)
    cu = cu_seqlens_from_lengths([11])
    for opt in [dict(), dict(z=None), dict(D=None, delta_bias=None)]:
        args = dict(zip(NAMES, xs)) | opt
        y = selective_scan_ref_varlen(**args, cu_seqlens=cu)
        assert rel(y, direct_loop(**args)) < 1e-12
    y = selective_scan_ref_varlen(*xs, cu, delta_softplus=False)
    assert rel(y, direct_loop(*xs, softplus=False)) < 1e-12


def test_triton_matches_direct_loop_one_sequence():
    xs = make(19, 5, 4, seed=1)
    y = selective_scan_varlen(*xs, cu_seqlens_from_lengths([19]), backend="triton")
    assert rel(y, direct_loop(*[x.double() for x in xs])) < 1e-5


# lengths around the chunk (8) and window (16, 24) edges, several chunks and windows, random splits
LENGTHS = {
    "edges": [1, 7, 8, 9, 31, 32, 33],
    "several_segments": [70, 3, 41],
    "random": None,
}


@pytest.mark.parametrize("case,cfg", [(c, CFG) for c in LENGTHS] + [("random", CFG_SMALL),
                                                                     ("several_segments", CFG_SMALL),
                                                                     ("edges", CFG_WIDE),
                                                                     ("random", CFG_AUTO),
                                                                     ("edges", CFG_SPLIT),
                                                                     ("random", replace(CFG_SMALL, bwd_split=True))])
def test_triton_equals_reference_output_and_every_gradient(case, cfg):
    lengths = LENGTHS[case]
    if lengths is None:
        g = torch.Generator().manual_seed(7)
        cuts = sorted(torch.randperm(127, generator=g)[:6].add(1).tolist())
        lengths = [b - a for a, b in zip([0] + cuts, cuts + [128])]
    # 40 channels: a full block of 32 and a partial one
    T, Dm, N = sum(lengths), 40 if cfg in (CFG, CFG_AUTO, CFG_SPLIT) else 24, 4
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(T, Dm, N, seed=len(case))
    assert_matches_reference(selective_scan_triton(*xs, cu, config=cfg), xs, cu, gy_seed=3)


def test_states_not_a_power_of_two_and_A_as_mamba_passes_it():
    """N = 5 (B / C rows loaded masked: EVEN_N off; the states padded to 8) and A with the transposed strides Mamba's
    mixer gives it (the launchers read it states-major without a copy, and dA comes back in A's layout): output
    and every gradient against the fp64 reference, A's gradient in A's strides."""
    lengths = [13, 1, 30, 20]
    T, Dm, N = sum(lengths), 40, 5
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(T, Dm, N, seed=31)
    A_t = xs[2].detach().t().contiguous().requires_grad_()  # (N, D), channels contiguous
    xs[2] = A_t.t()                                          # (D, N) with strides (1, D), as the mixer passes it
    assert xs[2].stride() == (1, Dm)
    assert_matches_reference(selective_scan_triton(*xs, cu, config=CFG), xs, cu, gy_seed=9)
    y = selective_scan_triton(*xs, cu, config=CFG)
    (dA,) = torch.autograd.grad(y.sum(), [xs[2]])
    assert dA.stride() == xs[2].stride()


@pytest.mark.parametrize("N", [1, 3, 16, 32])
def test_split_backward_at_every_state_count(N):
    """bwd_split at N = 1 and 3 (padded to 2 and 4 states: one or two a lane, masked), 16 (Mamba's: 8 a lane)
    and 32: the halving butterfly's rounds change with the states a lane holds; 40 channels cross a block of
    16 (two lanes a channel, one warp) and end in a partial one."""
    lengths = [9, 1, 22]
    T, Dm = sum(lengths), 40
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(T, Dm, N, seed=40 + N)
    assert_matches_reference(selective_scan_triton(*xs, cu, config=CFG_SPLIT), xs, cu, gy_seed=N, what=f" N={N}")


@pytest.mark.parametrize("floor", [1, 12])
def test_more_sequences_than_the_search_floor_covers(monkeypatch, floor):
    """520 sequences (> 2**9 - 1: the in-kernel search over cu_seqlens needs one halving past the default floor),
    some empty, through windows that hold many of them; with the floor off (the depth from S alone) and above the
    depth S needs (halvings that must change nothing)."""
    from rerankers.kernels import triton_utils
    monkeypatch.setattr(triton_utils, "LOG_S_MIN", floor)
    lengths = torch.randint(0, 3, (520,), generator=torch.Generator().manual_seed(5)).tolist()
    T, Dm, N = sum(lengths), 8, 4
    cu = cu_seqlens_from_lengths(lengths)
    assert triton_utils.log_s(520) == max(10, floor)
    xs = make(T, Dm, N, seed=21)
    assert_matches_reference(selective_scan_triton(*xs, cu, config=CFG_WIDE), xs, cu, gy_seed=4)


def test_packed_equals_concatenated_sequences_and_no_leak():
    lengths = [9, 1, 40, 17]
    T, Dm, N = sum(lengths), 16, 4
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(T, Dm, N, seed=11)
    y = selective_scan_triton(*xs, cu, config=CFG)
    # each sequence alone through the same kernel
    for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        part = [x[a:b] if x.shape[0] == T and x.dim() == 2 and name in ("u", "delta", "B", "C", "z") else x
                for name, x in zip(NAMES, xs)]
        yi = selective_scan_triton(*part, cu_seqlens_from_lengths([b - a]), config=CFG)
        assert rel(y[a:b], yi) <= 1e-6
    # a loss on sequence 2 only: exactly zero gradient on every other sequence's tokens
    a, b = cu[2].item(), cu[3].item()
    grads = torch.autograd.grad(y[a:b].square().sum(), xs, allow_unused=True)
    for name, gr in zip(NAMES, grads):
        if name in ("u", "delta", "B", "C", "z"):
            outside = torch.cat([gr[:a], gr[b:]])
            assert torch.count_nonzero(outside) == 0, name
            assert torch.count_nonzero(gr[a:b]) > 0, name


@pytest.mark.parametrize("opts", [dict(z=None), dict(D=None, delta_bias=None), dict(delta_softplus=False)])
def test_optional_inputs(opts):
    lengths = [12, 21]
    T, Dm, N = sum(lengths), 8, 4
    cu = cu_seqlens_from_lengths(lengths)
    xs = dict(zip(NAMES, make(T, Dm, N, seed=5)))
    if opts.get("delta_softplus") is False:
        xs["delta"] = xs["delta"].detach().abs().add(0.05).requires_grad_()
        xs["delta_bias"] = xs["delta_bias"].detach().abs().mul(0.1).requires_grad_()  # keep delta > 0
    args = xs | opts
    y = selective_scan_triton(**args, cu_seqlens=cu, config=CFG)
    yr = selective_scan_ref_varlen(**args, cu_seqlens=cu)
    assert rel(y, yr) <= 1e-5
    leaves = [v for k, v in args.items() if isinstance(v, torch.Tensor)]
    g1 = torch.autograd.grad(y.sum(), leaves)
    g2 = torch.autograd.grad(yr.sum(), leaves)
    for a, b in zip(g1, g2):
        assert rel(a, b) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_fp32_state(dtype):
    lengths = [30, 5]
    T, Dm, N = sum(lengths), 16, 4
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(T, Dm, N, seed=9)
    lp = [x.detach().to(dtype).requires_grad_() if x.dim() == 2 and x.shape[0] == T else x for x in xs]
    y = selective_scan_triton(*lp, cu, config=CFG)
    assert y.dtype == dtype
    yr = selective_scan_ref_varlen(*[x.detach().float() for x in lp], cu)
    assert rel(y, yr) < 1e-2
    grads = torch.autograd.grad(y.float().sum(), lp)
    assert all(torch.isfinite(g_.float()).all() for g_ in grads)
    assert grads[0].dtype == dtype and grads[2].dtype == torch.float32


def test_empty_sequences():
    lengths = [3, 0, 5]
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(8, 4, 2, seed=2)
    y = selective_scan_triton(*xs, cu, config=CFG)
    assert rel(y, selective_scan_ref_varlen(*xs, cu)) <= 1e-5


def test_scan_config_is_checked():
    xs = make(8, 4, 2, seed=2, grad=False)
    cu = cu_seqlens_from_lengths([8])
    for bad, msg in [(ScanConfig(block_t=6), "power of two"), (ScanConfig(window=12, block_t=8), "multiple of block_t"),
                     (ScanConfig(block_t=8, bwd_history=3), "divide block_t")]:
        with pytest.raises(ValueError, match=msg):
            selective_scan_triton(*xs, cu, config=bad)


def test_empty_sequences_everywhere_output_and_gradients():
    # empty sequences first, in a row and last: repeated cu_seqlens entries inside windows, at window
    # edges (window 8/4 tokens) and around a sequence that spans several windows
    lengths = [0, 3, 0, 0, 13, 1, 0, 4, 0]
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(sum(lengths), 8, 4, seed=12)
    y = selective_scan_triton(*xs, cu, config=CFG_SMALL)
    xr = [x.detach().double().requires_grad_() for x in xs]
    yr = selective_scan_ref_varlen(*xr, cu)
    assert rel(y, yr) <= 1e-5
    for name, a, b in zip(NAMES, torch.autograd.grad(y.sum(), xs), torch.autograd.grad(yr.sum(), xr)):
        assert rel(a, b) <= 1e-5, name


@pytest.mark.parametrize("env", ["", "bwd_split=1"])
def test_torch_compile_traces_the_custom_op(monkeypatch, env):
    """fullgraph under aot_eager, with and without RERANKERS_SCAN_CONFIG (its parsing is not traced: the GPU run of
    the eleventh session failed on dataclasses.fields inside the graph)."""
    monkeypatch.setenv("RERANKERS_SCAN_CONFIG", env)
    torch._dynamo.reset()
    lengths = [6, 13]
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(sum(lengths), 8, 4, seed=4)

    def f(*args):
        return selective_scan_varlen(*args, cu, backend="triton").square().sum()
    cf = torch.compile(f, backend="aot_eager", fullgraph=True)
    l1, l0 = cf(*xs), f(*xs)
    assert torch.allclose(l1, l0)
    for a, b in zip(torch.autograd.grad(l1, xs), torch.autograd.grad(l0, xs)):
        assert torch.allclose(a, b)


def test_fit_fwd_under_dynamic_compile_keeps_one_graph(monkeypatch):
    """A fitted forward window depends on T and sizes the saved states: traced with a symbolic T (torch.compile,
    dynamic shapes) the forward keeps its power-of-two window, so a new token count reuses the graph (a
    recompile is an error here) and the numbers equal the eager call, which does fit (forced to 16 tokens; the
    fit reads T as the real one does, which a symbolic T would answer with a guard on its value)."""
    from rerankers.kernels.selective_scan import op
    monkeypatch.setattr(op, "_fitted", lambda T, *a: 16 + 0 * int(T))
    cfg = replace(CFG_AUTO, recompute_states=True, fit_fwd=True)

    def f(*args):
        return selective_scan_triton(*args, config=cfg, direct=False).square().sum()
    cf = torch.compile(f, backend="aot_eager", dynamic=True, fullgraph=True)
    # (torch._dynamo.config.patch, not monkeypatch: the config module's undo would delete the option)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for lengths, seed in (([6, 13], 4), ([9, 3, 11], 5)):
            cu = cu_seqlens_from_lengths(lengths)
            xs = make(sum(lengths), 8, 4, seed=seed)
            l1, l0 = cf(*xs, cu), f(*xs, cu)
            assert torch.allclose(l1, l0)
            for a, b in zip(torch.autograd.grad(l1, xs), torch.autograd.grad(l0, xs)):
                assert torch.allclose(a, b)
    torch._dynamo.reset()


def test_custom_op_opcheck(monkeypatch):
    from rerankers.kernels.selective_scan import op
    lengths = [5, 12]
    cu = cu_seqlens_from_lengths(lengths)
    xs = [x.detach() for x in make(sum(lengths), 8, 4, seed=6)]
    # recompute_states: the fake gives the window-start states' shape; with fit_fwd (the fit forced to 16 tokens,
    # a run-time window the power-of-two pick of 8 would not make) the fake sizes them from the fitted window
    monkeypatch.setattr(op, "_fitted", lambda *a: 16)
    assert op.forward_window(replace(CFG_AUTO, fit_fwd=True), 17, 2, 8, torch.device("cpu")) == (16, True)
    for cfg in (CFG, replace(CFG, recompute_states=True), replace(CFG_AUTO, recompute_states=True),
                replace(CFG_AUTO, recompute_states=True, fit_fwd=True, registers=128, registers_bwd=168), CFG_SPLIT):
        args = (*xs, cu, True, *op._flat(cfg))
        assert len(op._flat(cfg)) == len(fields(ScanConfig))  # every field reaches the op
        torch.library.opcheck(torch.ops.rerankers.selective_scan_fwd.default, args,
                              test_utils=("test_schema", "test_faketensor"))
    # the backward with A in the transposed strides Mamba's mixer gives it: the fake's dA has the real one's layout
    for cfg in (replace(CFG, recompute_states=True), replace(CFG_SPLIT, recompute_states=True)):
        flat = op._flat(cfg)
        _opcheck_backward(xs, cu, flat)


def _opcheck_backward(xs, cu, flat):
    xs = list(xs)
    xs[2] = xs[2].t().contiguous().t()
    y, states = torch.ops.rerankers.selective_scan_fwd.default(*xs, cu, True, *flat)
    torch.library.opcheck(torch.ops.rerankers.selective_scan_bwd.default, (torch.randn_like(y), *xs, cu, states, True,
                                                                           *flat),
                          test_utils=("test_schema", "test_faketensor"))


def test_softplus_overflow_branch_matches():
    # delta + bias > 20 takes softplus's linear branch
    xs = make(10, 4, 2, seed=8)
    xs[1] = (xs[1].detach() + 25.0).requires_grad_()
    xs[2] = (xs[2].detach() * 0.01).requires_grad_()
    cu = cu_seqlens_from_lengths([10])
    y = selective_scan_triton(*xs, cu, config=CFG)
    assert rel(y, selective_scan_ref_varlen(*[x.double() for x in xs], cu)) <= 1e-5
    assert not F.softplus(torch.tensor(25.0)).isnan()


# ---- ScanConfig.recompute_states: the forward keeps only the state at every forward window start
# (K = window / block_t times fewer), the backward rebuilds the chunk-start states from them
def forward_saving(fn):
    """``fn()`` with the tensors autograd saves for its backward recorded; returns (output, the one
    3-D saved tensor: the scan's states)."""
    saved = []

    def pack(x):
        saved.append(x)
        return x
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        y = fn()
    states = [x for x in saved if x.dim() == 3]
    assert len(states) == 1
    return y, states[0]


# a sequence over several windows, length-1 sequences, chunk / window edges; K = 2, 4, 2
RECOMPUTE_CASES = {
    "edges_and_ones": ([1, 7, 8, 9, 1, 31, 32, 33, 1, 1], CFG),
    "over_windows": ([70, 1, 3, 41, 1, 12], ScanConfig(window=32, window_bwd=24, block_t=8, warps=1, warps_bwd=1,
                                                       bwd_history=4)),
    "small_chunks": ([1, 29, 1, 1, 12, 20], CFG_SMALL),
}


@pytest.mark.parametrize("case", list(RECOMPUTE_CASES))
def test_recompute_states_output_every_gradient_and_saved_size(case):
    lengths, cfg = RECOMPUTE_CASES[case]
    rcfg = replace(cfg, recompute_states=True)
    T, Dm, N = sum(lengths), 40, 4
    K = cfg.window // cfg.block_t
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(T, Dm, N, seed=20 + len(case))
    y, states = forward_saving(lambda: selective_scan_triton(*xs, cu, config=rcfg))
    y0, states0 = forward_saving(lambda: selective_scan_triton(*xs, cu, config=cfg))
    # what the backward keeps: the window-start states, K times smaller, the default's every K-th
    assert states.shape == (-(-T // cfg.window), N, Dm) and states0.shape == (-(-T // cfg.block_t), N, Dm)
    if T % cfg.window == 0:
        assert states0.numel() == K * states.numel()
    assert torch.equal(states, states0[::K])
    # the rebuilt chunk-start states are the default forward's, bit for bit (same recurrence)
    with torch.no_grad():
        rebuilt = recompute_chunk_states(xs[0], xs[1], xs[2], xs[3], xs[7], cu, states, True, rcfg)
    assert torch.equal(rebuilt, states0)
    assert torch.equal(y, y0)
    # output and every gradient against the fp64 reference, and equal to the default path's
    xr = [x.detach().double().requires_grad_() for x in xs]
    yr = selective_scan_ref_varlen(*xr, cu)
    assert rel(y, yr) <= 1e-5
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(4))
    grads = torch.autograd.grad(y, xs, gy)
    grads0 = torch.autograd.grad(y0, xs, gy)
    grads_r = torch.autograd.grad(yr, xr, gy.double())
    for name, a, a0, b in zip(NAMES, grads, grads0, grads_r):
        assert a.dtype == xs[NAMES.index(name)].dtype
        assert rel(a, b) <= 1e-5, f"d{name}: {rel(a, b):.2e}"
        assert torch.equal(a, a0), f"d{name}"


def test_recompute_states_bf16_inputs():
    lengths = [30, 1, 5, 28]
    T, Dm, N = sum(lengths), 16, 4
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(T, Dm, N, seed=9)
    lp = [x.detach().to(torch.bfloat16).requires_grad_() if x.dim() == 2 and x.shape[0] == T else x for x in xs]
    y, states = forward_saving(lambda: selective_scan_triton(*lp, cu, config=replace(CFG, recompute_states=True)))
    assert y.dtype == torch.bfloat16 and states.dtype == torch.float32 and states.shape == (T // CFG.window, N, Dm)
    y0 = selective_scan_triton(*lp, cu, config=CFG)
    assert torch.equal(y, y0)
    ref = [x.detach().float().requires_grad_() for x in lp]
    yr = selective_scan_ref_varlen(*ref, cu)
    assert rel(y, yr) < 1e-2
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    grads = torch.autograd.grad(y, lp, gy)
    grads0 = torch.autograd.grad(y0, lp, gy)
    grads_r = torch.autograd.grad(yr, ref, gy.float())
    for name, a, a0, b, x in zip(NAMES, grads, grads0, grads_r, lp):
        assert a.dtype == x.dtype and torch.equal(a, a0), f"d{name}"
        assert rel(a, b) < 1e-2, f"d{name}: {rel(a, b):.2e}"  # the bound on y above (measured <= 3.6e-3)


def test_recompute_states_from_the_environment_and_through_compile(monkeypatch):
    lengths = [6, 1, 25]
    T, Dm, N = sum(lengths), 8, 4
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(T, Dm, N, seed=13)
    monkeypatch.delenv(RECOMPUTE_ENV, raising=False)
    assert default_config() == INTERPRET_CONFIG and INTERPRET_CONFIG.recompute_states  # on by default
    monkeypatch.setenv(RECOMPUTE_ENV, "0")
    assert default_config() == replace(INTERPRET_CONFIG, recompute_states=False)
    monkeypatch.setenv(RECOMPUTE_ENV, "1")
    assert default_config() == replace(INTERPRET_CONFIG, recompute_states=True)
    # without a config: the public entry point (eager, direct path), and the eager custom ops
    for call in (lambda: selective_scan_varlen(*xs, cu, backend="triton"),
                 lambda: selective_scan_triton(*xs, cu, direct=False)):
        _, states = forward_saving(call)
        assert states.shape == (-(-T // INTERPRET_CONFIG.window), N, Dm)
    xr = [x.detach().double().requires_grad_() for x in xs]

    def f(*args):
        return selective_scan_varlen(*args, cu, backend="triton").square().sum()
    cf = torch.compile(f, backend="aot_eager", fullgraph=True)
    loss = cf(*xs)
    loss_r = selective_scan_ref_varlen(*xr, cu).square().sum()
    assert rel(loss, loss_r) <= 1e-5
    for name, a, b in zip(NAMES, torch.autograd.grad(loss, xs), torch.autograd.grad(loss_r, xr)):
        assert rel(a, b) <= 1e-5, f"d{name}: {rel(a, b):.2e}"


# ---- windows fitted to whole waves of programs (backward_window, forward_window with fit_fwd; _fit_window)
CPU = torch.device("cpu")
BIG = ScanConfig()  # the GPU's warps and block_t (4, 8): windows are only picked here, no kernel runs


def _waves_cost(T: int, Dm: int, channels: int, W: int, slots: int) -> int:
    from rerankers.kernels.selective_scan.op import PROGRAM_COST
    return -(-(-(-T // W) * -(-Dm // channels)) // slots) * (min(W, T) + PROGRAM_COST)


@pytest.mark.parametrize("T,Dm", [(23272, 1536), (23272, 2048), (5819, 1536), (5819, 2048), (16384, 2048),
                                  (262144, 1536), (1, 1536), (90, 1536), (1000, 64)])
def test_fitted_window_is_the_cheapest_whole_wave_fit(T, Dm):
    """The fit is a multiple of block_t, at most WINDOW_MAX, no longer than T needs, and no candidate window
    makes fewer window walks (waves x tokens per program); the longest of equal ones."""
    warps, bt = 4, 8
    channels, slots = 32 * warps, resident_programs(warps) * 132
    W = _fit_window(T, Dm, channels, bt, slots)
    assert backward_window(BIG, T, T, Dm, CPU) == (W, True)  # sequences of one token: fitted, at run time
    assert W % bt == 0 and bt <= W <= WINDOW_MAX and W < T + bt
    cands = range(bt, min(WINDOW_MAX, -(-T // bt) * bt) + 1, bt)
    best = min(_waves_cost(T, Dm, channels, w, slots) for w in cands)
    assert _waves_cost(T, Dm, channels, W, slots) == best
    assert W == max(w for w in cands if _waves_cost(T, Dm, channels, w, slots) == best)


def test_fitted_window_fills_whole_waves_at_the_training_shapes():
    """The fifth session's measurement (KERNEL_NOTES.md): at 256 pairs (23,272 tokens, D 1536) the power-of-two
    window 256 made 1,092 backward programs on 264 slots, 4.14 waves (5 run, 83% filled on average); the fit fills
    its waves at least three-quarters on average, and 64 pairs' 5,819 tokens take one wave."""
    assert resident_programs(4) == 2 and resident_programs(4, 168) == 3 and resident_programs(4, 128) == 4
    for T, Dm in [(23272, 1536), (23272, 2048), (5819, 1536)]:
        W, runtime = backward_window(BIG, T, T // 93, Dm, CPU)
        waves = -(-T // W) * -(-Dm // 128) / 264
        assert runtime and waves / math.ceil(waves) >= 0.75, (T, Dm, W, waves)
    assert -(-5819 // backward_window(BIG, 5819, 64, 1536, CPU)[0]) * 12 <= 264
    # a register cap of 168 makes room for 3 backward programs per SM: the fit counts 396 slots
    W = backward_window(replace(BIG, registers_bwd=168), 23272, 250, 1536, CPU)[0]
    assert W == _fit_window(23272, 1536, 128, 8, 396)


def test_split_backward_fits_its_window_to_its_own_programs():
    """bwd_split: 16 channels a warp (64 a program of 4 warps) at its register cap of 128 (4 programs per SM):
    the fit counts those programs and slots, and the register cap set in the config replaces the default."""
    from rerankers.kernels.selective_scan.op import BWD_SPLIT_REGISTERS
    split = replace(BIG, bwd_split=True)
    for T, Dm in [(23272, 1536), (5819, 2048)]:
        slots = resident_programs(4, BWD_SPLIT_REGISTERS) * 132
        assert backward_window(split, T, T // 93, Dm, CPU) == (_fit_window(T, Dm, 64, 8, slots), True)
    W = backward_window(replace(split, registers_bwd=168), 23272, 250, 1536, CPU)[0]
    assert W == _fit_window(23272, 1536, 64, 8, resident_programs(4, 168) * 132)
    assert backward_window(split, 16384, 8, 2048, CPU) == (pick_window(0, 16384, 2048, 4, 8, CPU, 64), False)


def test_long_sequences_keep_the_power_of_two_window():
    """Sequences longer on average than the power-of-two window: every window's first piece is carried (the
    fit measured 5-6% slower at B8xL2048 and B1xL16384), so both walks keep pick_window's window."""
    for T, S, Dm in [(16384, 8, 2048), (16384, 1, 2048), (16384, 8, 1536)]:
        assert backward_window(BIG, T, S, Dm, CPU) == (256, False)
        assert forward_window(replace(BIG, fit_fwd=True), T, S, Dm, CPU) == (256, False)
    assert backward_window(BIG, 8192, 64, 2048, CPU)[1]  # B64xL128: 128 tokens, the window's own length


def test_forward_window_is_a_power_of_two_unless_fit_fwd():
    """The forward keeps its constexpr power of two (119 registers against 143 at a run-time window) unless
    fit_fwd asks for the fit, which counts resident programs from the register cap where one is set."""
    assert forward_window(BIG, 23272, 250, 1536, CPU) == (pick_window(0, 23272, 1536, 4, 8, CPU), False)
    assert forward_window(replace(BIG, window=24), 23272, 250, 1536, CPU) == (24, False)
    W, runtime = forward_window(replace(BIG, fit_fwd=True), 23272, 250, 1536, CPU)
    assert runtime and W == _fit_window(23272, 1536, 128, 8, 3 * 132)
    W, runtime = forward_window(replace(BIG, fit_fwd=True, registers=128), 23272, 250, 1536, CPU)
    assert runtime and W == _fit_window(23272, 1536, 128, 8, 4 * 132)


def test_register_caps_warps_and_windows_are_checked():
    xs = make(8, 4, 2, seed=2, grad=False)
    cu = cu_seqlens_from_lengths([8])
    for bad, msg in [(ScanConfig(registers=20), "multiple of 8 in 24..248"),
                     (ScanConfig(registers_bwd=255), "multiple of 8 in 24..248"),
                     (ScanConfig(registers=130), "multiple of 8 in 24..248"),
                     (ScanConfig(warps=3), "warps must be 1, 2, 4, 8 or 16"),
                     (ScanConfig(warps_bwd=0), "warps_bwd must be"), (ScanConfig(window=-8), "positive multiple")]:
        with pytest.raises(ValueError, match=msg):
            selective_scan_triton(*xs, cu, config=bad)


@pytest.mark.parametrize("fit_fwd", [False, True])
def test_fitted_windows_through_the_kernels(monkeypatch, fit_fwd):
    """Run-time windows of 40 tokens (not a power of two; chunk loops bounded at 64 or 256) in the backward, and
    with fit_fwd in the forward walks too (the state rebuild included): output and every gradient equal the
    reference, with and without recompute_states; register caps (ignored by the interpreter) change nothing."""
    from rerankers.kernels.selective_scan import op
    monkeypatch.setattr(op, "_fitted", lambda *a: 40)
    lengths = [70, 3, 41, 1, 12, 9]
    T, Dm, N = sum(lengths), 40, 4
    cu = cu_seqlens_from_lengths(lengths)
    for bound, rc in [(1, False), (4, True)]:
        monkeypatch.setattr(op, "window_bound", lambda W, k=bound: k * op.next_pow2(W))
        cfg = replace(CFG_AUTO, recompute_states=rc, fit_fwd=fit_fwd, registers=128, registers_bwd=168)
        assert op.forward_window(cfg, T, 6, Dm, CPU) == ((40, True) if fit_fwd else (8, False))
        xs = make(T, Dm, N, seed=30 + bound)
        assert_matches_reference(selective_scan_triton(*xs, cu, config=cfg), xs, cu, gy_seed=5,
                                 what=f" (bound x{bound}, recompute {rc})")


def test_the_gpu_default_chunking_through_the_kernels(monkeypatch):
    """The GPU's DEFAULT_CONFIG (chunks of 4 tokens with a history of 4: one sub-chunk a chunk, no re-advance;
    fit_fwd; recompute_states) under the interpreter, with one warp a program and windows fitted to 36 tokens
    (a multiple of 4, not of 8): output and every gradient equal the reference."""
    from rerankers.kernels.selective_scan import op
    assert op.DEFAULT_CONFIG.block_t == op.DEFAULT_CONFIG.bwd_history == 4 and op.DEFAULT_CONFIG.fit_fwd
    monkeypatch.setattr(op, "_fitted", lambda *a: 36)
    cfg = replace(op.DEFAULT_CONFIG, warps=1, warps_bwd=1)
    lengths = [70, 3, 41, 1, 12, 9]
    T, Dm, N = sum(lengths), 40, 4
    assert op.forward_window(cfg, T, 6, Dm, CPU) == (36, True) and op.backward_window(cfg, T, 6, Dm, CPU) == (36, True)
    cu = cu_seqlens_from_lengths(lengths)
    xs = make(T, Dm, N, seed=41)
    assert_matches_reference(selective_scan_triton(*xs, cu, config=cfg), xs, cu, gy_seed=6)


def test_explicit_window_is_kept():
    assert pick_window(24, 10 ** 6, 1536, 4, 8, CPU) == 24
    assert backward_window(replace(BIG, window_bwd=24), 10 ** 6, 10, 1536, CPU) == (24, False)


def test_config_fields_from_the_environment(monkeypatch):
    """RERANKERS_SCAN_CONFIG replaces fields of the default config (a lever at the training step, for benchmarks);
    a bad item is a ValueError naming the variable."""
    from rerankers.kernels.selective_scan.op import CONFIG_ENV
    monkeypatch.delenv(RECOMPUTE_ENV, raising=False)
    monkeypatch.setenv(CONFIG_ENV, "fit_fwd=1, registers=128,registers_bwd=168")
    assert default_config() == replace(INTERPRET_CONFIG, fit_fwd=True, registers=128, registers_bwd=168)
    monkeypatch.setenv(CONFIG_ENV, " ")
    assert default_config() == INTERPRET_CONFIG
    for bad, msg in [("fit=1", "not field=value"), ("registers", "not field=value"), ("fit_fwd=maybe", "0 or 1"),
                     ("registers=lots", "an integer")]:
        monkeypatch.setenv(CONFIG_ENV, bad)
        with pytest.raises(ValueError, match=f"{CONFIG_ENV}: .*{msg}"):
            default_config()

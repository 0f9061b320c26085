"""rerankers.kernels.add_rmsnorm: the reference against the unfused block code (bit for bit), the Triton
kernels (TRITON_INTERPRET=1 on the CPU) against the reference, and the Mamba model through the fused op."""
from __future__ import annotations

import itertools

import pytest
import torch

from rerankers.errors import KernelBackendError
from rerankers.kernels import add_rmsnorm, add_rmsnorm_ref
from rerankers.kernels.add_rmsnorm.op import NormConfig, add_rmsnorm_triton
from rerankers.kernels.add_rmsnorm.reference import residual_out_dtype

EPS = 1e-5
# tolerances by dtype of the compared tensor: relative norm error, and elementwise (rtol, atol)
REL = {torch.float32: 2e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}
CLOSE = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2), torch.float16: (4e-3, 4e-3)}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def unfused(hidden, residual, weight, eps, residual_in_fp32):
    """The block code before the fusion (MambaBlock.forward + MambaNorm.forward, RMS), verbatim."""
    residual = hidden if residual is None else residual + hidden
    if residual_in_fp32:
        residual = residual.float()
    xf = residual.float()
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return out.to(weight.dtype), residual


def inputs(T: int, H: int, dtype: torch.dtype, residual: str, seed: int):
    """hidden (T, H) in dtype, residual None / in dtype ("same") / fp32 ("fp32"), weight (H,) fp32."""
    g = torch.Generator().manual_seed(seed)
    h = (2 * torch.randn(T, H, generator=g)).to(dtype).requires_grad_()
    r = None if residual == "none" else torch.randn(T, H, generator=g).to(
        dtype if residual == "same" else torch.float32).requires_grad_()
    w = (1 + 0.3 * torch.randn(H, generator=g)).requires_grad_()
    return h, r, w


def assert_close(name: str, got: torch.Tensor, ref: torch.Tensor) -> None:
    assert got.dtype == ref.dtype, name
    rtol, atol = CLOSE[got.dtype]
    assert rel(got, ref) <= REL[got.dtype], (name, rel(got, ref))
    torch.testing.assert_close(got, ref, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("dtype,residual,fp32", list(itertools.product(
    [torch.float32, torch.bfloat16], ["none", "same", "fp32"], [True, False])))
def test_reference_is_the_unfused_block_code_bit_for_bit(dtype, residual, fp32):
    h, r, w = inputs(9, 24, dtype, residual, seed=1)
    out, res = add_rmsnorm_ref(h, r, w, EPS, fp32)
    out0, res0 = unfused(h, r, w, EPS, fp32)
    assert torch.equal(out, out0) and torch.equal(res, res0) and res.dtype == res0.dtype
    assert res.dtype == residual_out_dtype(h.dtype, None if r is None else r.dtype, fp32)
    g_out, g_res = torch.randn_like(out), torch.randn_like(res)
    leaves = (h, w) if r is None else (h, r, w)
    grads = torch.autograd.grad((out * g_out).sum() + (res * g_res).sum(), leaves)
    grads0 = torch.autograd.grad((out0 * g_out).sum() + (res0 * g_res).sum(), leaves)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads0))
    if r is None and (dtype == torch.float32 or not fp32):
        assert res is h  # nothing to add or cast: hidden itself, as before


def test_reference_in_fp64_is_the_direct_formula():
    h, r, w = (t.detach().double() for t in inputs(5, 12, torch.float32, "same", seed=2))
    out, res = add_rmsnorm_ref(h, r, w, EPS, residual_in_fp32=True, keep_residual=True)
    x = h + r
    direct = x / torch.sqrt((x * x).sum(-1, keepdim=True) / 12 + EPS) * w
    assert res.dtype == out.dtype == torch.float64 and torch.equal(res, x)
    assert rel(out, direct) < 1e-14


CASES = [(1, 40), (7, 64), (33, 96), (33, 40)]  # T = 1 (one row), 7, 33 (several programs); H not a power of two


@pytest.mark.parametrize("dtype,residual,fp32", list(itertools.product(
    [torch.float32, torch.bfloat16], ["none", "same", "fp32"], [True, False])))
def test_triton_equals_reference_every_gradient(dtype, residual, fp32):
    for i, (T, H) in enumerate(CASES):
        h, r, w = inputs(T, H, dtype, residual, seed=10 + i)
        out, res = add_rmsnorm(h, r, w, EPS, fp32, backend="triton")
        out_r, res_r = add_rmsnorm_ref(h, r, w, EPS, fp32)
        assert out.dtype == torch.float32 and res.dtype == res_r.dtype
        assert torch.equal(res, res_r)  # the same sum, rounded the same way
        assert_close(f"out T={T} H={H}", out, out_r)
        g = torch.Generator().manual_seed(100 + i)
        g_out, g_res = torch.randn(out.shape, generator=g), torch.randn(res.shape, generator=g).to(res.dtype)
        names, leaves = ("hidden", "weight"), (h, w)
        if r is not None:
            names, leaves = ("hidden", "residual", "weight"), (h, r, w)
        grads = torch.autograd.grad((out * g_out).sum() + (res * g_res).sum(), leaves)
        grads_r = torch.autograd.grad((out_r * g_out).sum() + (res_r * g_res).sum(), leaves)
        for name, a, b in zip(names, grads, grads_r):
            assert_close(f"d{name} T={T} H={H}", a, b)


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_out_dtype_and_final_norm_without_residual_out(out_dtype):
    # the autocast case (fp32 residual stream, bf16 out) and the final norm (residual_out not kept:
    # the backward recomputes hidden + residual, here a bf16 sum rounded as torch rounds it)
    for residual, fp32 in (("fp32", True), ("same", False)):
        h, r, w = inputs(33, 40, torch.bfloat16, residual, seed=4)
        out, res = add_rmsnorm(h, r, w, EPS, fp32, out_dtype=out_dtype, keep_residual=False, backend="triton")
        out_r, res_r = add_rmsnorm_ref(h, r, w, EPS, fp32, out_dtype=out_dtype, keep_residual=False)
        assert res is None and res_r is None and out.dtype == out_dtype
        assert_close("out", out, out_r)
        g_out = torch.randn(out.shape).to(out_dtype)
        for name, a, b in zip(("hidden", "residual", "weight"), torch.autograd.grad(out, (h, r, w), g_out),
                              torch.autograd.grad(out_r, (h, r, w), g_out)):
            assert_close("d" + name, a, b)


def test_gradient_of_one_output_only_and_rows_are_independent():
    h, r, w = inputs(17, 40, torch.float32, "fp32", seed=5)
    out, res = add_rmsnorm(h, r, w, EPS, True, backend="triton")
    # only residual_out is used: d hidden = d residual = the upstream gradient, d weight = 0
    gh, gr, gw = torch.autograd.grad(res[3:5].sum(), (h, r, w), retain_graph=True, allow_unused=True)
    expected = torch.zeros_like(h)
    expected[3:5] = 1
    assert torch.equal(gh, expected) and torch.equal(gr, expected) and (gw is None or torch.count_nonzero(gw) == 0)
    # only out, on one row: no gradient reaches any other row
    gh, gr = torch.autograd.grad(out[6].sum(), (h, r))
    assert torch.count_nonzero(torch.cat([gh[:6], gh[7:]])) == 0 and torch.count_nonzero(gh[6]) == 40
    assert torch.equal(gh, gr)


def test_other_tiles_programs_and_config_checks():
    h, r, w = inputs(33, 96, torch.float32, "same", seed=6)
    out_r, res_r = add_rmsnorm_ref(h, r, w, EPS, True)
    g_out = torch.randn(out_r.shape)
    grads_r = torch.autograd.grad((out_r * g_out).sum() + res_r.sum(), (h, r, w))
    # one row per block forward; 8 rows per block and three programs backward; the auto split
    for cfg in (NormConfig(rows=1, warps=1, rows_bwd=8, warps_bwd=2, programs_bwd=3), NormConfig()):
        out, res = add_rmsnorm_triton(h, r, w, EPS, True, config=cfg)
        assert_close(f"out {cfg}", out, out_r)
        grads = torch.autograd.grad((out * g_out).sum() + res.sum(), (h, r, w))
        for name, a, b in zip(("hidden", "residual", "weight"), grads, grads_r):
            assert_close(f"d{name} {cfg}", a, b)
    with pytest.raises(ValueError, match="rows must be 0"):
        add_rmsnorm_triton(h, r, w, EPS, config=NormConfig(rows=3))
    with pytest.raises(ValueError, match="weight must be"):
        add_rmsnorm_triton(h, r, w[:-1], EPS)


def test_empty_pack():
    h, r, w = inputs(0, 16, torch.float32, "same", seed=7)
    out, res = add_rmsnorm(h, r, w, EPS, True, backend="triton")
    assert out.shape == res.shape == (0, 16)
    gh, gr, gw = torch.autograd.grad(out.sum() + res.sum(), (h, r, w), allow_unused=True)
    assert gw is not None and torch.count_nonzero(gw) == 0


def test_dispatch_cpu_default_is_the_reference_and_errors():
    h, r, w = inputs(5, 8, torch.float32, "same", seed=8)
    for backend in (None, "auto", "reference", "mamba_ssm"):
        out, res = add_rmsnorm(h, r, w, EPS, True, backend=backend)
        out0, res0 = unfused(h, r, w, EPS, True)
        assert torch.equal(out, out0) and torch.equal(res, res0)
    with pytest.raises(KernelBackendError, match="backend"):
        add_rmsnorm(h, r, w, EPS, backend="cuda-magic")
    with pytest.raises(ValueError, match="residual must have"):
        add_rmsnorm(h, r[:, :4], w, EPS)
    with pytest.raises(ValueError, match=r"hidden must be \(T, H\)"):
        add_rmsnorm(h[0], None, w, EPS)


def test_custom_op_compiles():
    h, r, w = inputs(9, 24, torch.bfloat16, "fp32", seed=9)

    def f(h, r, w):
        out, res = add_rmsnorm(h, r, w, EPS, True, out_dtype=torch.bfloat16, backend="triton")
        return out.float().square().sum() + res.sum()
    cf = torch.compile(f, backend="aot_eager", fullgraph=True)
    l1, l0 = cf(h, r, w), f(h, r, w)
    assert torch.equal(l1, l0)
    for a, b in zip(torch.autograd.grad(l1, (h, r, w)), torch.autograd.grad(l0, (h, r, w))):
        assert torch.equal(a, b)


def test_direct_equals_custom_op():
    h, r, w = inputs(7, 40, torch.bfloat16, "fp32", seed=11)
    results = []
    for direct in (True, False):
        out, res = add_rmsnorm_triton(h, r, w, EPS, True, out_dtype=torch.bfloat16, direct=direct)
        results.append((out, res) + torch.autograd.grad((out.float() * 3).sum() + res.sum(), (h, r, w)))
    assert all(torch.equal(a, b) for a, b in zip(*results))


# ---- the Mamba model through the fused op
def _tiny_mamba(n_layer: int = 2):
    from rerankers.models.mamba import MambaBackbone, MambaConfig

    torch.manual_seed(0)
    model = MambaBackbone(MambaConfig(d_model=40, n_layer=n_layer, vocab_size=50, d_state=4, d_conv=4, expand=2))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


def _old_forward(model, batch):
    """MambaBackbone.forward as it was before the fusion (residual add, cast, MambaNorm: separate ops)."""
    hidden, residual = model.embedding(batch.input_ids), None
    for layer in model.layers:
        residual = hidden if residual is None else residual + hidden
        if layer.residual_in_fp32:
            residual = residual.float()
        hidden = layer.mixer(layer.norm(residual), batch.cu_seqlens)
    return model.norm_f(hidden if residual is None else residual + hidden)


def _batch():
    from rerankers.data.packing import pack_token_ids

    g = torch.Generator().manual_seed(3)
    return pack_token_ids([torch.randint(0, 50, (n,), generator=g).tolist() for n in (5, 1, 9)])


def _grads(model, out):
    model.zero_grad()
    (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("autocast", [False, True])
def test_mamba_cpu_path_keeps_the_unfused_numbers_bit_for_bit(autocast):
    model, batch = _tiny_mamba(), _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        new = model(batch)
        g_new = _grads(model, new)
        old = _old_forward(model, batch)
        g_old = _grads(model, old)
    assert torch.equal(new, old) and new.dtype == torch.float32
    assert g_new.keys() == g_old.keys()
    for name in g_old:
        assert torch.equal(g_new[name], g_old[name]), name


def test_mamba_with_the_triton_norm_equals_the_reference_path(monkeypatch):
    """2 layers, fp32: output and every parameter gradient with the fused Triton add+RMSNorm (scan and
    conv on the reference) == the unfused reference path."""
    import rerankers.models.mamba as mamba

    model, batch = _tiny_mamba(), _batch()
    model.kernel_backend = "reference"
    expected = model(batch)
    g_expected = _grads(model, expected)
    calls = []

    def triton_norm(*args, **kwargs):
        calls.append(kwargs.get("backend"))
        return add_rmsnorm(*args, **{**kwargs, "backend": "triton"})
    monkeypatch.setattr(mamba, "add_rmsnorm", triton_norm)
    out = model(batch)
    g_out = _grads(model, out)
    assert len(calls) == 3  # two blocks and the final norm
    assert rel(out, expected) <= 1e-6
    for name, g in g_expected.items():
        assert rel(g_out[name], g) <= 1e-5, name

"""rerankers.kernels.dispatch (and the package's import): backend choice, argument checks, and that
neither the package nor its reference paths import triton."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rerankers.kernels import (
    KernelBackendError,
    causal_conv1d_ref_varlen,
    causal_conv1d_varlen,
    selective_scan_ref_varlen,
    selective_scan_varlen,
)
from rerankers.kernels.varlen import cu_seqlens_from_lengths


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def scan_inputs(T: int, Dm: int, N: int, seed: int = 2) -> list[torch.Tensor]:
    """u, delta, A, B, C, D, z, delta_bias."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    return [r(T, Dm), 0.5 * r(T, Dm), -torch.rand(Dm, N, generator=g) - 0.5, r(T, N), r(T, N), r(Dm), r(T, Dm),
            0.5 * r(Dm)]


def test_dispatch_errors():
    cu = cu_seqlens_from_lengths([3, 0, 5])
    xs = scan_inputs(8, 4, 2)
    # CPU tensors and no backend: the reference
    assert rel(selective_scan_varlen(*xs, cu), selective_scan_ref_varlen(*xs, cu)) == 0.0
    with pytest.raises(KernelBackendError, match="backend"):
        selective_scan_varlen(*xs, cu, backend="cuda-magic")
    with pytest.raises(ValueError, match="B must have shape"):
        selective_scan_varlen(xs[0], xs[1], xs[2], xs[3][:, :1], xs[4], xs[5], xs[6], xs[7], cu)


def test_weight_shapes_and_errors():
    cu = cu_seqlens_from_lengths([3, 4])
    x = torch.randn(7, 8)
    w3 = torch.randn(8, 1, 4)  # nn.Conv1d layout is accepted
    assert rel(causal_conv1d_varlen(x, w3, None, cu), causal_conv1d_ref_varlen(x, w3[:, 0], None, cu)) == 0
    with pytest.raises(ValueError, match="weight"):
        causal_conv1d_varlen(x, torch.randn(8, 5), None, cu)
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d_varlen(x, torch.randn(8, 4), None, cu, activation="relu")


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_cu_seqlens_dtype_and_shape_are_checked_for_every_backend(backend):
    xs = scan_inputs(8, 4, 2)
    x, w = torch.randn(8, 4), torch.randn(4, 3)
    for bad, msg in [(torch.tensor([0.0, 3.0, 8.0]), "must be int32"),
                     (torch.tensor([[0, 3, 8]], dtype=torch.int32), "must be 1-D")]:
        with pytest.raises(ValueError, match=msg):
            selective_scan_varlen(*xs, bad, backend=backend)
        with pytest.raises(ValueError, match=msg):
            causal_conv1d_varlen(x, w, None, bad, backend=backend)


def test_cu_seqlens_values_are_checked_by_the_references():
    x, w = torch.randn(8, 4), torch.randn(4, 3)
    with pytest.raises(ValueError, match="end at T=8"):
        causal_conv1d_varlen(x, w, None, cu_seqlens_from_lengths([3, 4]))
    with pytest.raises(ValueError, match="non-decreasing"):
        selective_scan_varlen(*scan_inputs(8, 4, 2), torch.tensor([0, 5, 3, 8], dtype=torch.int32))


def test_package_and_references_do_not_import_triton():
    # triton made unimportable: the package, packing and the CPU (reference) paths still work
    code = """
import sys
class NoTriton:
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ImportError("triton blocked by the test")
sys.meta_path.insert(0, NoTriton())
import torch
import rerankers.data.packing
from rerankers.kernels import causal_conv1d_varlen, selective_scan_varlen
cu = torch.tensor([0, 3, 8], dtype=torch.int32)
x = torch.randn(8, 4)
y = causal_conv1d_varlen(x, torch.randn(4, 4), None, cu)
y = selective_scan_varlen(y, x, -torch.rand(4, 2), torch.randn(8, 2), torch.randn(8, 2), None, None, None, cu)
assert y.shape == (8, 4)
assert not any(m == "triton" or m.startswith("triton.") for m in sys.modules), "triton was imported"
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]

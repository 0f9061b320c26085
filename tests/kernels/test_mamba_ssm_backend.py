"""rerankers.kernels.mamba_ssm_backend: the padded layout it hands to mamba-ssm, and its missing-extra error."""
from __future__ import annotations

import pytest
import torch

from rerankers.kernels import selective_scan_varlen
from rerankers.kernels.mamba_ssm_backend import _Padding
from rerankers.kernels.varlen import cu_seqlens_from_lengths


def test_padding_round_trip_against_a_direct_copy():
    lengths = [3, 0, 5, 1]
    cu = cu_seqlens_from_lengths(lengths)
    x = torch.randn(sum(lengths), 6)
    p = _Padding(cu, x.shape[0])
    padded = p.pad(x)
    assert padded.shape == (4, 6, 5) and padded.is_contiguous()
    want = torch.zeros(4, 6, 5)
    for s, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        want[s, :, : b - a] = x[a:b].T
    assert torch.equal(padded, want)
    assert torch.equal(p.unpad(padded), x)
    assert p.pad(None) is None


def test_mamba_ssm_backend_names_the_extra():
    pytest.importorskip("torch")
    try:
        import mamba_ssm  # noqa: F401
        pytest.skip("mamba-ssm is installed here")
    except ImportError:
        pass
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g), -torch.rand(4, 2, generator=g),
          torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g), torch.randn(4, generator=g),
          torch.randn(8, 4, generator=g), torch.randn(4, generator=g)]
    with pytest.raises(ImportError, match="mamba-ssm"):
        selective_scan_varlen(*xs, cu_seqlens_from_lengths([8]), backend="mamba_ssm")

"""rerankers.models.recompute: marked tensors rebuilt for the backward, everything else as autograd keeps it."""
from __future__ import annotations

import pytest
import torch

from rerankers.models import recompute
from rerankers.models.recompute import RecomputeSaved, outer_hooks_active


def _inputs():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)


def test_a_marked_tensor_is_rebuilt_once_for_the_ops_that_saved_it():
    built = []
    x = _inputs()
    want = torch.autograd.grad(((x * 2).sin() * (x * 2).cos()).sum(), x)[0]
    with RecomputeSaved() as saved:
        y = x * 2
        saved.mark(y, lambda: built.append(1) or x.detach() * 2)
        out = (y.sin() * y.cos()).sum()  # sin and cos both save y
    del y
    assert torch.allclose(torch.autograd.grad(out, x)[0], want) and built == [1]


def test_in_place_changes_keep_autograds_safety():
    """A marked tensor modified after its mark is saved as it is (a rebuild would give its old value); a saved
    tensor modified before the backward unpacks it raises, as autograd does without hooks."""
    x = _inputs()
    with RecomputeSaved() as saved:
        y = x * 2
        saved.mark(y, lambda: x.detach() * 2)
        y.add_(1)
        out = y.sin().sum()
    assert torch.allclose(torch.autograd.grad(out, x)[0], 2 * (x * 2 + 1).cos())
    with RecomputeSaved():
        y = x * 2
        out = y.sin().sum()
        y.mul_(3)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(out, x)


def test_outer_hooks_are_seen(monkeypatch):
    """Inside another mechanism's saved-tensor hooks (checkpointing, offloading) the mixer installs none of its own
    (they would replace the outer ones for every tensor saved there)."""
    assert not outer_hooks_active()
    with torch.autograd.graph.save_on_cpu():
        assert outer_hooks_active()
    from rerankers.data.packing import pack_token_ids
    from rerankers.models.mamba import MambaBackbone, MambaConfig
    model = MambaBackbone(MambaConfig(d_model=16, n_layer=1, vocab_size=32, d_state=4))
    model.recompute_mixer = True
    made = []
    init = recompute._Recipe.__init__
    monkeypatch.setattr(recompute._Recipe, "__init__", lambda self, *a: made.append(1) or init(self, *a))
    batch = pack_token_ids([[1, 2, 3], [4, 5]])
    with torch.autograd.graph.save_on_cpu():
        model(batch).sum().backward()
    assert not made
    model.gradient_checkpointing = True
    model.train()
    model(batch).sum().backward()
    assert not made
    model.gradient_checkpointing = False
    model(batch).sum().backward()
    assert made


def test_a_graph_dropped_without_its_backward_is_freed():
    """A saved output (a custom Function's, as the scan saves its states) is kept detached: kept with its grad_fn it
    would own the node that owns it, a cycle through C++ that outlives every reference and gc.collect()."""
    import gc
    import weakref

    class Exp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            out = x.exp()
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, g):
            (out,) = ctx.saved_tensors
            return g * out

    x = _inputs()
    with RecomputeSaved():
        out = Exp.apply(x)
    alive = weakref.ref(out)
    del out
    gc.collect()
    assert alive() is None
    with RecomputeSaved():  # and the backward still sees the saved output
        out = Exp.apply(x)
    assert torch.equal(torch.autograd.grad(out.sum(), x)[0], x.detach().exp())


def test_a_blocks_recipes_go_with_its_graph_without_garbage_collection():
    """What a mark's rebuild reads is freed by reference counting once the backward ran (or the graph was dropped):
    the hooks hold no reference cycle, which would keep every step's rebuild inputs (GPU memory) until a garbage
    collection, steps later."""
    import gc
    import weakref

    x = _inputs()
    gc.disable()
    try:
        for run_backward in (True, False):
            h = x * 3
            with RecomputeSaved() as saved:
                y = h.sin()
                saved.mark(y, lambda h=h: h.detach().sin())
                out = (y * y).sum()
            alive, hooks = weakref.ref(h), weakref.ref(saved)
            del h, y, saved
            if run_backward:
                out.backward()
            del out
            assert alive() is None and hooks() is None, run_backward
    finally:
        gc.enable()

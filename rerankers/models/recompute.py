"""Keep a recipe instead of chosen activations for the backward: recompute them when it asks.

``with RecomputeSaved() as rec:`` installs saved-tensor hooks for the ops run inside; after an op
produces a tensor that is cheap to rebuild, ``rec.mark(t, fn)`` registers ``fn`` (no arguments,
rebuilds ``t`` without gradients). Whenever a later op in the block saves ``t`` for its backward
(by ``ctx.save_for_backward`` or an autograd formula), the hooks keep a handle instead of the
tensor; the backward's first unpack runs ``fn`` once, and the copy lives until every op that saved
``t`` has taken it (then it is dropped: one layer's worth at a time). ``fn`` runs under the autocast
state of the mark (the backward itself runs without autocast). Tensors that were not marked are saved
as usual. ``fn`` must not hold ``t`` itself (that would keep it alive) and must rebuild it exactly
(the same kernels on the same inputs).

Saved-tensor hooks bypass autograd's own check that a saved tensor was not modified in place, so the
hooks check versions themselves: a marked tensor modified after its mark is saved as it is (no
recipe), and any saved tensor modified before the backward unpacks it raises as autograd would. Only
the innermost hooks apply, so :func:`outer_hooks_active` tells a caller not to install these inside
another mechanism's (``torch.utils.checkpoint``, ``save_on_cpu``), which would otherwise be bypassed.

Mamba-1's mixer marks its conv output and its delta (:class:`rerankers.models.mamba.MambaMixer`,
``recompute``): mamba-ssm's ``checkpoint_lvl=1`` does the same inside its fused mixer. (With LoRA on
``x_proj`` under autocast, peft's cast copy of x is what that layer saves: only delta and the scan's x
are then rebuilt.)
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def _key(t: Tensor) -> tuple:
    """What identifies a saved tensor as a marked one: same memory, shape, strides and dtype."""
    return (t.device, t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)


def outer_hooks_active() -> bool:
    """Whether saved-tensor hooks are already in force (checkpointing, offloading): ones installed inside
    would replace them for every tensor saved there."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top is not None and top(False) is not None


_MODIFIED = ("one of the variables needed for gradient computation has been modified by an inplace operation "
             "(seen by rerankers.models.recompute's saved-tensor hooks: version {} at save, {} now)")


class _Recipe:
    """A marked tensor's rebuild, its version at the mark, the autocast state it was made under (the backward
    runs without it), and the copy shared by the unpacks of one backward."""

    __slots__ = ("fn", "version", "autocast", "packs", "copy")

    def __init__(self, fn: Callable[[], Tensor], version: int, device_type: str):
        self.fn, self.version, self.packs, self.copy = fn, version, 0, None
        on = torch.is_autocast_enabled(device_type)
        self.autocast = (device_type, torch.get_autocast_dtype(device_type) if on else None, on)

    def get(self) -> Tensor:
        out = self.copy
        if out is None:
            device_type, dtype, on = self.autocast
            with torch.no_grad(), torch.autocast(device_type, dtype=dtype, enabled=on):
                out = self.fn()
        self.packs -= 1
        self.copy = out if self.packs > 0 else None  # the last op that saved it has it: drop the copy
        return out


def _pack(recipes: dict[tuple, _Recipe], t: Tensor):
    """A saved tensor's pack: its recipe where it is marked and unchanged since, else the tensor (detached)."""
    recipe = recipes.get(_key(t)) if isinstance(t, Tensor) and t.layout == torch.strided else None
    if recipe is None or recipe.version != t._version:  # not marked, or modified since: kept as it is
        # detached: a saved output kept with its grad_fn would own the node that owns it, a cycle through C++
        # that no garbage collection breaks (a graph dropped without its backward would never be freed);
        # the detached tensor shares the version counter, and autograd gives the unpacked one its grad_fn back
        return (t.detach(), t._version)
    recipe.packs += 1
    return recipe


class RecomputeSaved(torch.autograd.graph.saved_tensors_hooks):
    """Saved-tensor hooks that swap marked tensors for their recipes (module docstring)."""

    def __init__(self) -> None:
        recipes: dict[tuple, _Recipe] = {}
        self._recipes = recipes
        # the hooks close over the recipes, not over self: a bound method stored on self (the base class keeps
        # its hooks as attributes) is a reference cycle, freed only by a garbage collection that may come steps
        # later, and until then each block's marks keep their rebuilds' inputs alive (GPU memory)
        super().__init__(lambda t: _pack(recipes, t), self._unpack)

    def __enter__(self) -> RecomputeSaved:
        super().__enter__()
        return self

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self._recipes.clear()  # only ops inside the block save through it: the saved variables hold their recipes

    def mark(self, t: Tensor, fn: Callable[[], Tensor]) -> None:
        """``t`` (marked before any op of the block saves it) is rebuilt by ``fn()`` where the backward needs it."""
        self._recipes[_key(t)] = _Recipe(fn, t._version, t.device.type)

    @staticmethod
    def _unpack(obj):
        if isinstance(obj, _Recipe):
            return obj.get()
        t, version = obj
        if t._version != version:
            raise RuntimeError(_MODIFIED.format(version, t._version))
        return t

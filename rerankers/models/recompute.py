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

Mamba-1's mixer marks its conv output and its delta (:class:`rerankers.models.mamba.MambaMixer`,
``recompute``): mamba-ssm's ``checkpoint_lvl=1`` does the same inside its fused mixer.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def _key(t: Tensor) -> tuple:
    """What identifies a saved tensor as a marked one: same memory, shape, strides and dtype."""
    return (t.device, t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)


class _Recipe:
    """A marked tensor's rebuild, the autocast state it was made under (the backward runs without it), and the
    copy shared by the unpacks of one backward."""

    __slots__ = ("fn", "autocast", "packs", "copy")

    def __init__(self, fn: Callable[[], Tensor], device_type: str):
        self.fn, self.packs, self.copy = fn, 0, None
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


class RecomputeSaved(torch.autograd.graph.saved_tensors_hooks):
    """Saved-tensor hooks that swap marked tensors for their recipes (module docstring)."""

    def __init__(self) -> None:
        self._recipes: dict[tuple, _Recipe] = {}
        super().__init__(self._pack, self._unpack)

    def __enter__(self) -> RecomputeSaved:
        super().__enter__()
        return self

    def mark(self, t: Tensor, fn: Callable[[], Tensor]) -> None:
        """``t`` (just computed inside the block) is rebuilt by ``fn()`` where the backward needs it."""
        self._recipes[_key(t)] = _Recipe(fn, t.device.type)

    def _pack(self, t: Tensor):
        recipe = self._recipes.get(_key(t)) if isinstance(t, Tensor) and t.layout == torch.strided else None
        if recipe is None:
            return t
        recipe.packs += 1
        return recipe

    @staticmethod
    def _unpack(obj):
        return obj.get() if isinstance(obj, _Recipe) else obj

"""A kernel's forward and backward as torch custom ops, with one autograd formula for both call paths.

The ops are torch custom ops (``rerankers::<name>_fwd`` / ``_bwd``) so that ``torch.compile`` traces
around them. In eager mode the custom-op dispatch itself (redispatch below autograd, the aliasing
checks, the dynamo-disable wrapper) costs host time per call that is many times the conv's GPU time
at 8K tokens (benchmarks/KERNEL_NOTES.md, "What is left"), so eager calls run the same
implementations in a plain ``torch.autograd.Function`` instead. Both paths use the one
``setup_context`` and ``backward`` given to :func:`kernel_op`; ``backward`` is handed the backward
to call (the custom op, or on the eager path its implementation).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch


@functools.lru_cache(maxsize=64)
def config_args(cfg) -> tuple:
    """A frozen config dataclass's field values in field order, as the custom ops take them (their schemas hold no
    dataclass). Cached: ``dataclasses.astuple`` deep-copies every field on every call (~30 us of host a call, two
    calls a Mamba layer)."""
    return tuple(getattr(cfg, f.name) for f in dataclasses.fields(cfg))


@dataclass(frozen=True)
class KernelOp:
    """``op(*inputs, direct=True)``: the forward with its autograd formula. ``direct``: in eager mode,
    skip the custom-op dispatch (False: always the custom ops); under torch.compile the custom ops
    are used either way."""

    fwd: Any  # torch.library.CustomOpDef: rerankers::<name>_fwd
    bwd: Any  # rerankers::<name>_bwd
    eager: Callable  # the plain autograd.Function's apply

    def __call__(self, *inputs, direct: bool = True):
        if direct and not torch.compiler.is_compiling():
            return self.eager(*inputs)
        return self.fwd(*inputs)


def kernel_op(name: str, fwd_impl: Callable, fwd_fake: Callable, bwd_impl: Callable, bwd_fake: Callable,
              setup_context: Callable, backward: Callable) -> KernelOp:
    """Register ``rerankers::{name}_fwd`` / ``_bwd`` (schemas from the implementations' annotations,
    no mutated arguments) and their fake (meta) functions, and the autograd formula once:
    ``setup_context(ctx, inputs, output)`` after the forward, ``backward(ctx, bwd, *grads)`` with
    ``bwd`` the backward to call. On the eager path gradients of unused outputs stay None (not
    materialised: the scan's saved states are an output)."""
    fwd = torch.library.custom_op(f"rerankers::{name}_fwd", mutates_args=())(fwd_impl)
    fwd.register_fake(fwd_fake)
    bwd = torch.library.custom_op(f"rerankers::{name}_bwd", mutates_args=())(bwd_impl)
    bwd.register_fake(bwd_fake)
    fwd.register_autograd(lambda ctx, *grads: backward(ctx, bwd, *grads), setup_context=setup_context)

    class _Eager(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            ctx.set_materialize_grads(False)
            out = fwd_impl(*inputs)
            setup_context(ctx, inputs, out)
            return out

        @staticmethod
        def backward(ctx, *grads):
            return backward(ctx, bwd_impl, *grads)

    _Eager.__name__ = _Eager.__qualname__ = f"{name}_eager"
    return KernelOp(fwd=fwd, bwd=bwd, eager=_Eager.apply)

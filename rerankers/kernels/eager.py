"""Eager-mode autograd for the kernels' custom ops without the custom-op dispatch.

The ops are torch custom ops so that ``torch.compile`` traces around them; in eager mode the
dispatch itself (redispatch below autograd, the aliasing checks, the dynamo-disable wrapper) costs
host time per call that is many times the conv's GPU time at 8K tokens (KERNEL_NOTES.md,
"What is left"). :func:`eager_autograd` wraps the same implementation, ``setup_context`` and
``backward`` in a plain ``torch.autograd.Function``; callers use it unless they are being compiled.
"""
from __future__ import annotations

from typing import Callable

import torch

# module-level so that the benchmark can time both paths; False = always the custom ops
DIRECT = True


def use_direct() -> bool:
    """Call the implementations directly (eager mode), or the custom ops (torch.compile, or DIRECT off)."""
    return DIRECT and not torch.compiler.is_compiling()


def eager_autograd(fwd_impl: Callable, setup_context: Callable, backward: Callable) -> Callable:
    """``apply(*inputs)`` running ``fwd_impl`` with the custom op's autograd formula. ``ctx.direct`` is
    True in ``backward`` so that it can call the backward implementation directly too. Gradients of
    unused outputs stay None (not materialised: the scan's saved states are an output)."""

    class _Direct(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            ctx.set_materialize_grads(False)
            out = fwd_impl(*inputs)
            setup_context(ctx, inputs, out)
            ctx.direct = True
            return out

        @staticmethod
        def backward(ctx, *grads):
            return backward(ctx, *grads)

    _Direct.__name__ = _Direct.__qualname__ = f"Direct_{fwd_impl.__name__}"
    return _Direct.apply

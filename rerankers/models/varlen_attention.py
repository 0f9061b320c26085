"""Attention over packed sequences (no attention across sequence boundaries), bidirectional or,
with ``causal=True``, causal within each sequence (decoders: rerankers.models.decoder).

``varlen_attention(q, k, v, cu_seqlens, max_seqlen)`` with q/k/v (T, heads, head_dim) picks:

1. ``flash_attn.flash_attn_varlen_func`` on CUDA where flash-attn is installed (fp16/bf16);
2. in eager mode on CUDA (fp16/bf16), torch's own FlashAttention-2 kernels called directly from a plain
   ``autograd.Function`` (:class:`_FlashVarlen`: ``aten::_flash_attention_forward`` / ``_backward``, the ops
   torch's ``varlen_attn`` wraps): the same kernels without its custom-op dispatch and its per-call
   ``torch.zeros`` (host time that made BERT's small packed batches slower than transformers' padded ones;
   BENCHMARKS.md, seventh session), with attention dropout (the forward's philox state kept for the backward);
   a torch whose ops refuse these arguments falls back to 3 once, with a warning;
3. ``torch.nn.attention.varlen.varlen_attn`` on CUDA with torch >= 2.9 (fp16/bf16; under torch.compile);
4. otherwise (the CPU, fp32/fp64 on the GPU, older torch): one SDPA call per sequence on its own
   slice -- exact, slower, and never one SDPA over the whole pack (that would attend across pairs).

A pack of sequences that all have the same length (``T == S * max_seqlen``) is a dense batch: it goes to one
SDPA call over (S, heads, L, d) views with no mask, whatever the backend above, where SDPA picks cuDNN's
Hopper kernel (measured at L2048 x 8 on an H200, bert-base: 9.6 ms of attention a training step against 16.2 ms
of FlashAttention-2 through ``varlen_attn``; BENCHMARKS.md, sixth session).

It is registered in transformers' AttentionInterface (and mask interface) as ``rerankers_varlen``:
a model whose config uses that implementation runs this path when its forward receives
``cu_seqlens`` / ``max_seqlen`` keyword arguments, and plain padded SDPA (with the usual padding
mask) otherwise, so one model object serves both the packed and the padded path.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "rerankers_varlen"

try:  # optional: flash-attn
    from flash_attn import flash_attn_varlen_func as _flash_varlen  # type: ignore
except Exception:  # noqa: BLE001 - any import failure means "not available"
    _flash_varlen = None

try:  # torch >= 2.9
    from torch.nn.attention.varlen import varlen_attn as _torch_varlen  # type: ignore
except Exception:  # noqa: BLE001
    _torch_varlen = None


@functools.lru_cache(maxsize=1)
def _torch_varlen_causal_kwargs() -> Mapping[str, Any]:
    """How torch's varlen_attn asks for causal masking: ``window_size=(-1, 0)`` (torch >= 2.11) or
    ``is_causal=True`` (the first releases). Read once: ``inspect.signature`` on every layer's call was host time."""
    import inspect
    params = inspect.signature(_torch_varlen).parameters
    return MappingProxyType({"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True})


# None: untried; True: a direct call has worked in this process (later errors are real ones and raise); False: the
# first one was refused (this torch's ops take other arguments): varlen_attn from then on
_direct_ok: bool | None = None if hasattr(torch.ops.aten, "_flash_attention_forward") else False
_aux: dict[tuple, Tensor] = {}  # per device: stand-ins for undefined philox outputs (never read without dropout)


def _aux_tensor(kind: str, device: torch.device) -> Tensor:
    key = (kind, device)
    t = _aux.get(key)
    if t is None:
        with torch.inference_mode(False):  # made once, saved for backward later: never an inference tensor
            t = (torch.zeros(2, dtype=torch.uint64, device=device) if kind == "rng" else
                 torch.empty(0, device=device))
        _aux[key] = t
    return t


class _FlashVarlen(torch.autograd.Function):
    """torch's FlashAttention-2 varlen kernels, forward and backward, without a custom op around them.
    q/k/v (T, heads, d) with unit stride in d, cu (S+1,) int32 -> (T, heads, d)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, cu: Tensor, max_seqlen: int, scale: float | None,
                dropout_p: float, causal: bool) -> Tensor:
        out, lse, rng, extra, _ = torch.ops.aten._flash_attention_forward(
            q, k, v, cu, cu, max_seqlen, max_seqlen, dropout_p, causal, False, scale=scale)
        # the philox state (rng_state, unused; seed and offset in older torch) goes back to the backward as it came
        # out, as aten's own SDPA does; undefined outputs (no dropout: never read) become fixed tensors
        rng = rng if rng is not None else _aux_tensor("rng", q.device)
        extra = extra if extra is not None else _aux_tensor("unused", q.device)
        ctx.save_for_backward(q, k, v, out, lse, cu, rng, extra)
        ctx.args = (max_seqlen, scale, dropout_p, causal)
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        q, k, v, out, lse, cu, rng, extra = ctx.saved_tensors
        max_seqlen, scale, dropout_p, causal = ctx.args
        if dout.stride(-1) != 1:
            dout = dout.contiguous()
        dq, dk, dv = torch.ops.aten._flash_attention_backward(
            dout, q, k, v, out, lse, cu, cu, max_seqlen, max_seqlen, dropout_p, causal, rng, extra, scale=scale)
        return dq, dk, dv, None, None, None, None, None


def varlen_backend(device: torch.device, dtype: torch.dtype) -> str:
    """Which implementation :func:`varlen_attention` uses for these inputs (under torch.compile, a traceable custom
    op instead of the direct flash call)."""
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        if _flash_varlen is not None:
            return "flash_attn"
        if _direct_ok is not False and not torch.compiler.is_compiling():
            return "flash_direct"
        if _torch_varlen is not None:
            return "torch_varlen"
    return "per_sequence_sdpa"


def _flash_direct(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, max_seqlen: int, scale: float | None,
                  dropout_p: float, causal: bool) -> Tensor | None:
    """:class:`_FlashVarlen`, or None where this torch refuses the first call (the backend is then off for the
    process). Once a call has worked, an error is a real one and raises."""
    global _direct_ok
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    try:
        out = _FlashVarlen.apply(q, k, v, cu, max_seqlen, scale, dropout_p, causal)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, TypeError) as e:
        if _direct_ok:  # it has worked before: a real error
            raise
        _direct_ok = False
        logger.warning("packed attention: torch's flash kernels refused a direct call (%s); using varlen_attn%s",
                       str(e).splitlines()[0][:200],
                       ", which applies no attention dropout" if dropout_p > 0 else "")
        return None
    _direct_ok = True
    return out


def per_sequence_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor,
                           scale: float | None = None, dropout_p: float = 0.0, causal: bool = False) -> Tensor:
    """Reference: SDPA on each sequence's slice. q/k/v (T, heads, d) -> (T, heads, d)."""
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        qi, ki, vi = (x[s:e].transpose(0, 1) for x in (q, k, v))  # (heads, L, d)
        out[s:e] = F.scaled_dot_product_attention(qi, ki, vi, dropout_p=dropout_p, scale=scale,
                                                  is_causal=causal).transpose(0, 1)
    return out


def dense_attention(q: Tensor, k: Tensor, v: Tensor, sequences: int, scale: float | None = None,
                    dropout_p: float = 0.0, causal: bool = False) -> Tensor:
    """A pack of ``sequences`` sequences of equal length as one SDPA batch (views where the strides allow).
    q/k/v (T, heads, d), T a multiple of ``sequences`` -> (T, heads, d)."""
    T, H, d = q.shape
    L = T // sequences
    qs, ks, vs = (x.reshape(sequences, L, H, d).transpose(1, 2) for x in (q, k, v))  # (S, heads, L, d)
    out = F.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout_p, scale=scale, is_causal=causal)
    return out.transpose(1, 2).reshape(T, H, d)


def _autocast_inputs(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v as SDPA sees them under autocast: in the autocast dtype (SDPA is on autocast's lower-precision
    list). Without this, fp32 inputs under autocast (rotary embeddings computed in fp32 promote q and k: GPT-NeoX,
    Qwen, Llama) fell to the per-sequence fallback on the GPU instead of the fused varlen kernel."""
    device = q.device.type
    if not torch.is_autocast_enabled(device):
        return q, k, v
    low = torch.get_autocast_dtype(device)
    return tuple(x.to(low) if x.is_floating_point() and x.dtype != low else x for x in (q, k, v))


def varlen_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_seqlen: int,
                     scale: float | None = None, dropout_p: float = 0.0, causal: bool = False) -> Tensor:
    """Packed attention, bidirectional (or causal within each sequence with ``causal``).
    q/k/v (T, heads, d), cu_seqlens (S+1,) int32 -> (T, heads, d); ``max_seqlen`` is at least every sequence's
    length (as the fused kernels require), so ``T == S * max_seqlen`` means equal lengths: a dense batch.

    Attention dropout is applied by the flash-attn, direct flash and per-sequence backends; torch's
    varlen_attn has none (it runs without attention dropout: under torch.compile).
    """
    q, k, v = _autocast_inputs(q, k, v)
    backend = varlen_backend(q.device, q.dtype)
    S = cu_seqlens.shape[0] - 1
    if S >= 1 and q.shape[0] == S * max_seqlen:  # every sequence max_seqlen long (none is longer): dense
        # torch's varlen_attn has no attention dropout: the dense call keeps each backend's behaviour
        p = 0.0 if backend == "torch_varlen" else dropout_p
        return dense_attention(q, k, v, S, scale=scale, dropout_p=p, causal=causal)
    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    if backend == "flash_direct":
        out = _flash_direct(q, k, v, cu, max_seqlen, scale, dropout_p, causal)
        if out is not None:
            return out
        backend = varlen_backend(q.device, q.dtype)
    if backend == "flash_attn":
        return _flash_varlen(q, k, v, cu, cu, max_seqlen, max_seqlen, dropout_p=dropout_p,
                             softmax_scale=scale, causal=causal)
    if backend == "torch_varlen":
        extra = _torch_varlen_causal_kwargs() if causal else {}
        return _torch_varlen(q, k, v, cu, cu, max_seqlen, max_seqlen, scale=scale, **extra)
    return per_sequence_attention(q, k, v, cu, scale=scale, dropout_p=dropout_p, causal=causal)


def _hf_attention_forward(module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                          scaling: float | None = None, dropout: float = 0.0, **kwargs):
    """transformers attention function. query/key/value (B, heads, L, d) -> ((B, L, heads, d), None).

    Packed when ``cu_seqlens`` is given (then B == 1 and L == T), padded SDPA otherwise.
    """
    cu = kwargs.get("cu_seqlens")
    if cu is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, is_causal=False)
    if query.shape[0] != 1:
        raise ValueError(f"packed attention expects batch size 1 (all sequences in one row), got {query.shape[0]}")
    global packed_calls
    packed_calls += 1
    # squeeze, not [0]: the backward of a select writes the gradient into a fresh zero-filled (1, heads, T, d)
    # tensor (a strided copy per input), the backward of a squeeze is a view (6 copies a layer fewer)
    q, k, v = (x.squeeze(0).transpose(0, 1) for x in (query, key, value))  # (T, heads, d)
    out = varlen_attention(q, k, v, cu, int(kwargs["max_seqlen"]), scale=scaling, dropout_p=dropout)
    return out.unsqueeze(0), None


_registered = False
#: incremented by every packed call of the registered attention function; BertBackbone checks it
#: so that a transformers version whose model bypasses the AttentionInterface fails loudly instead
#: of attending across the pairs of a pack.
packed_calls = 0


def register_with_transformers() -> str:
    """Register ``rerankers_varlen`` in transformers' attention and mask interfaces (idempotent)."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
        AttentionInterface.register(ATTN_IMPLEMENTATION, _hf_attention_forward)
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, sdpa_mask)
        _registered = True
    return ATTN_IMPLEMENTATION

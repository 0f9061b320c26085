"""The chunked (state space duality, matmul-form) varlen SSD scan in plain PyTorch: the CPU path and,
until a Triton kernel exists, the GPU path (torch only).

Same signature and semantics as :func:`rerankers.kernels.ssd.reference.ssd_ref_varlen`. The packed
stream is cut into chunks of Q tokens regardless of where sequences start (``T`` padded up to a
multiple of Q with a sequence of its own), and every term is masked by the sequence each token
belongs to (a ``seq_idx`` per token, as mamba_ssm's kernels):

1. intra-chunk (the "attention-like" diagonal blocks): ``y_l += sum_s C_l·B_s exp(cs_l - cs_s) dt_s x_s``
   over s <= l of l's sequence, where ``cs`` is the cumulative log-decay ``dt·A`` *of l's sequence*
   inside the chunk (a masked matmul, not a cumsum over the chunk, so that no sequence's ``dt`` enters
   another's expression: the gradient across sequences is exactly zero, not a rounding residue);
2. chunk states: the state after each chunk from its own tokens of the sequence it ends in;
3. chunk to chunk: the state entering each chunk, a decayed sum over earlier chunks that end in the
   same sequence (an exact segment sum over chunks, masked to -inf elsewhere before the exp);
4. off-diagonal: ``y_l += exp(cs_l) C_l · state entering the chunk``, only for tokens of the sequence
   the previous chunk ended in (the one sequence that runs across the chunk boundary).

Everything is computed in fp32 (fp64 where an input is fp64) with autocast disabled; memory is
about 3·T·Q·H floats for the (Q, Q) decay blocks, so a smaller Q trades memory for more chunks
(the result does not depend on Q beyond rounding).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..precision import reference_dtype
from ..varlen import check_cu_seqlens, sequence_ids
from .reference import NO_DT_LIMIT, discretize_dt


def _chunks(t: Tensor, pad: int, Q: int) -> Tensor:
    """(T, ...) -> (T/Q chunks, Q, ...), zero rows appended to fill the last chunk."""
    if pad:
        t = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))])
    return t.reshape(-1, Q, *t.shape[1:])


def _segment_sum_over_chunks(v: Tensor) -> Tensor:
    """(K, H) per-chunk log-decays -> (K, K, H) with [c, c'] = sum of v[c'+1 .. c] (0 on the diagonal;
    entries above it are meaningless and masked by the caller). Exact: no difference of cumsums."""
    K = v.shape[0]
    after = torch.ones(K, K, dtype=torch.bool, device=v.device).triu(1)        # [c', k]: k > c'
    return v[None].expand(K, K, -1).masked_fill(~after[..., None], 0).cumsum(1).transpose(0, 1)


def ssd_chunked_varlen(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                       dt_bias: Tensor | None, cu_seqlens: Tensor, chunk_size: int = 256, dt_softplus: bool = True,
                       dt_limit: tuple[float, float] = NO_DT_LIMIT) -> Tensor:
    """Chunked varlen SSD scan.

    x: (T, H, P); dt: (T, H); A: (H,); B, C: (T, G, N), H % G == 0; D, dt_bias: (H,) or None;
    cu_seqlens: (S+1,) int (values checked on the CPU only: no host synchronisation on CUDA);
    chunk_size: Q >= 1. Returns y: (T, H, P) in x's dtype.
    """
    T, H, P = x.shape
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    check_cu_seqlens(cu_seqlens, T, check_values=not x.is_cuda)
    S = cu_seqlens.numel() - 1
    if T == 0 or S == 0:
        return x.new_zeros((T, H, P))
    ct = reference_dtype(x, dt, A, B, C, D, dt_bias)
    with torch.autocast(x.device.type, enabled=False):
        y = _ssd_chunked(x.to(ct), discretize_dt(dt, dt_bias, dt_softplus, dt_limit, ct), A.to(ct), B.to(ct),
                         C.to(ct), sequence_ids(cu_seqlens, T), S, min(chunk_size, T))
        if D is not None:
            y = y + x.to(ct) * D.to(ct)[:, None]
    return y.to(x.dtype)


def _ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, seq: Tensor, S: int, Q: int) -> Tensor:
    """x (T, H, P), dt (T, H) discretized, A (H,), B, C (T, G, N), seq (T,) sequence ids -> y (T, H, P) without D."""
    T, H, P = x.shape
    G, N = B.shape[1:]
    R = H // G
    pad = -T % Q
    K = (T + pad) // Q
    seqc = torch.cat([seq, seq.new_full((pad,), S)]).reshape(K, Q)             # the padding: a sequence S
    xdt = _chunks(x * dt[..., None], pad, Q).reshape(K, Q, G, R, P)
    a = _chunks(dt * A, pad, Q)                                                # (K, Q, H) log-decays
    Bc, Cc = _chunks(B, pad, Q), _chunks(C, pad, Q)                            # (K, Q, G, N)

    # cumulative log-decay of each token's own sequence inside its chunk: cs[l] = sum a[s], s <= l, same sequence
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    same = (seqc[:, :, None] == seqc[:, None, :]) & causal                     # (K, Q(l), Q(s))
    cs = torch.einsum("kls,ksh->klh", same.to(a.dtype), a)                      # (K, Q, H)

    # 1. intra-chunk
    csh = cs.transpose(1, 2)                                                    # (K, H, Q)
    seg = (csh[:, :, :, None] - csh[:, :, None, :]).masked_fill(~same[:, None], float("-inf"))
    decay = torch.exp(seg).reshape(K, G, R, Q, Q)                               # (K, G, R, Q(l), Q(s))
    CB = torch.einsum("klgn,ksgn->kgls", Cc, Bc)                                # (K, G, Q, Q)
    y = torch.einsum("kgrls,ksgrp->klgrp", decay * CB[:, :, None], xdt)        # (K, Q, G, R, P)

    # 2. the state after each chunk, from its own tokens of the sequence it ends in
    end_seq = seqc[:, -1]                                                       # (K,)
    in_end = (seqc == end_seq[:, None])[..., None]                              # (K, Q, 1)
    to_end = torch.exp((cs[:, -1:] - cs).masked_fill(~in_end, float("-inf"))).reshape(K, Q, G, R)
    states = torch.einsum("ksgn,ksgrp,ksgr->kgrpn", Bc, xdt, to_end)           # (K, G, R, P, N)

    # 3. chunk to chunk: ends[c] = sum over c' <= c ending in the same sequence of decay(c'..c] states[c']
    same_end = (end_seq[:, None] == end_seq[None, :]) & torch.ones(K, K, dtype=torch.bool, device=x.device).tril()
    passing = torch.exp(_segment_sum_over_chunks(cs[:, -1]).masked_fill(~same_end[..., None], float("-inf")))
    ends = torch.einsum("kjgr,jgrpn->kgrpn", passing.reshape(K, K, G, R), states)
    start = torch.cat([torch.zeros_like(ends[:1]), ends[:-1]])                  # the state entering each chunk

    # 4. off-diagonal: tokens of the sequence the previous chunk ended in read the entering state
    prev_seq = torch.cat([end_seq.new_full((1,), -1), end_seq[:-1]])
    from_prev = (seqc == prev_seq[:, None])[..., None]                          # (K, Q, 1)
    carry = torch.exp(cs.masked_fill(~from_prev, float("-inf"))).reshape(K, Q, G, R, 1)
    y = y + torch.einsum("klgn,kgrpn->klgrp", Cc, start) * carry
    return y.reshape(K * Q, H, P)[:T]

"""Packed (varlen) attention backends at the training shapes: which one should BERT's packed path call?

    PYTHONPATH=. python benchmarks/bench_attention.py [--pairs 64 256] [--lengths 512 2048 8192] [--out DIR]

Issue 13: at equal lengths our packed BERT ran at 0.68-0.90x of transformers' padded SDPA (BENCHMARKS.md, fourth
session). Ours calls torch's ``varlen_attn`` (FlashAttention-2); SDPA on a padded batch picks cuDNN's Hopper kernel.
Systems, each on the same q/k/v (bf16, BERT-base heads: 12 x 64):

- ``varlen_attn``: what :func:`rerankers.models.varlen_attention.varlen_attention` runs today (since the sixth
  session: one dense SDPA call where all sequences have the same length);
- ``fused varlen``: torch's ``varlen_attn`` (FlashAttention-2) itself, whatever the lengths (the path before);
- ``njt cudnn`` / ``njt flash`` / ``njt efficient``: SDPA over a jagged nested tensor (offsets = cu_seqlens) with
  one backend forced (cuDNN's nested path needs ``TORCH_CUDNN_SDPA_NESTED_TENSOR_ENABLED=1``, set here);
- ``padded sdpa``: the pairs padded to the longest with a key mask, SDPA's own pick (transformers' path); the pad
  and unpad copies are inside its timed call, so its row is an upper bound on the padded kernel's time.

Correctness first: every system's output and q/k/v gradients against the fp32 per-sequence reference on fresh
random inputs (a system that fails is reported and not timed). Then forward and forward+backward (median of the
timed calls after warm-up, synchronised; real tokens/s) at MS MARCO-shaped packs (``--pairs``) and at equal
lengths (``--lengths``: 16K tokens a call). On a CPU (``--device cpu``) only the checks run, as a smoke test.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

os.environ.setdefault("TORCH_CUDNN_SDPA_NESTED_TENSOR_ENABLED", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from rerankers.bench.timing import environment, time_calls  # noqa: E402
from rerankers.bench.workload import msmarco_lengths  # noqa: E402
from rerankers.kernels.varlen import cu_seqlens_from_lengths  # noqa: E402
from rerankers.models.varlen_attention import per_sequence_attention, varlen_attention  # noqa: E402

logger = logging.getLogger("bench_attention")
HEADS, HEAD_DIM = 12, 64
NJT = {"njt cudnn": SDPBackend.CUDNN_ATTENTION, "njt flash": SDPBackend.FLASH_ATTENTION,
       "njt efficient": SDPBackend.EFFICIENT_ATTENTION}


def _njt(x: torch.Tensor, cu: torch.Tensor) -> torch.Tensor:
    """(T, H, d) packed -> (S, H, j, d) jagged nested tensor over the same storage."""
    return torch.nested.nested_tensor_from_jagged(x, offsets=cu.long()).transpose(1, 2)


def attend(system: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor,
           max_len: int, dropout_p: float = 0.0) -> torch.Tensor:
    """One system's bidirectional attention over the packed sequences. q/k/v (T, H, d) -> (T, H, d).
    ``dropout_p``: attention dropout (``varlen_attn`` and ``padded sdpa`` only)."""
    if dropout_p and system not in ("varlen_attn", "padded sdpa"):
        raise ValueError(f"{system}: no attention dropout here")
    if system == "varlen_attn":
        return varlen_attention(q, k, v, cu, max_len, dropout_p=dropout_p)
    if system == "fused varlen":
        from rerankers.models import varlen_attention as va
        return va._torch_varlen(q, k, v, cu, cu, max_len, max_len)
    if system in NJT:
        with sdpa_kernel(NJT[system]):
            out = F.scaled_dot_product_attention(_njt(q, cu), _njt(k, cu), _njt(v, cu))
        return out.transpose(1, 2).values()
    if system == "padded sdpa":
        lengths = cu.diff().tolist()
        pad = [torch.nn.utils.rnn.pad_sequence(list(x.split(lengths)), batch_first=True).transpose(1, 2)
               for x in (q, k, v)]  # (S, H, L, d)
        keep = torch.arange(max_len, device=q.device)[None, :] < cu.diff()[:, None]  # (S, L)
        out = F.scaled_dot_product_attention(*pad, attn_mask=keep[:, None, None, :], dropout_p=dropout_p)
        return out.transpose(1, 2)[keep]
    if system == "reference":
        return per_sequence_attention(q, k, v, cu)
    raise ValueError(f"unknown system {system!r}")


def inputs(lengths: list[int], device: torch.device, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    qkv = [torch.randn(T, HEADS, HEAD_DIM, generator=g).to(device, dtype).requires_grad_() for _ in range(3)]
    return qkv, cu_seqlens_from_lengths(lengths).to(device), max(lengths)


def check(system: str, device: torch.device, dtype: torch.dtype, lengths: list[int] | None = None) -> dict:
    """Output and q/k/v gradients against the fp32 per-sequence reference, ragged lengths (1 and 255 included)
    unless ``lengths`` says otherwise."""
    lengths = lengths or [1, 37, 255, 64, 2, 130, 91, 17]
    (q, k, v), cu, max_len = inputs(lengths, device, dtype, seed=1)
    ref = [x.detach().float().requires_grad_() for x in (q, k, v)]
    g = torch.randn(q.shape, generator=torch.Generator().manual_seed(2)).to(device)
    try:
        out = attend(system, q, k, v, cu, max_len)
        grads = torch.autograd.grad(out, (q, k, v), g.to(dtype))
    except Exception as e:  # noqa: BLE001 - a backend this torch / card lacks: reported, not timed
        return {"system": system, "ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    want = per_sequence_attention(*ref, cu)
    want_grads = torch.autograd.grad(want, ref, g)
    err = {"out": (out.float() - want).norm().item() / want.norm().item()}
    for name, a, b in zip("qkv", grads, want_grads):
        err[f"d{name}"] = (a.float() - b).norm().item() / b.norm().item()
    tol = 2e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-5
    return {"system": system, "lengths": lengths, "ok": all(e <= tol for e in err.values()), "errors": err}


def check_dropout(system: str, device: torch.device, dtype: torch.dtype, p: float = 0.1) -> dict:
    """With attention dropout, the backward must drop what the forward dropped. The output is linear in v for a
    fixed mask (out = P_drop v), so with the output itself as its gradient, sum(v * dv) == sum(out^2) > 0. A
    backward with another mask (a second draw's, out2) would give sum(out * out2) instead, the "another mask" value:
    how far a wrong backward lands. ``padded sdpa`` (SDPA's own dropout) is the control."""
    lengths = [1, 37, 255, 64, 2, 130, 91, 17]
    (q, k, v), cu, max_len = inputs(lengths, device, dtype, seed=3)
    out, out2 = (attend(system, q, k, v, cu, max_len, dropout_p=p) for _ in range(2))
    (dv,) = torch.autograd.grad(out, (v,), out.detach())
    own = out.float().square().sum().item()
    err = abs((v.float() * dv.float()).sum().item() - own) / own
    other = abs((out.float() * out2.float()).sum().item() - own) / own
    return {"system": f"{system} dropout {p}", "ok": err <= 1e-2 and other > 5e-2,
            "errors": {"own mask": err, "another mask": other}}


def time_system(system: str, lengths: list[int], device: torch.device, dtype: torch.dtype, warmup: int,
                repeats: int) -> dict:
    sets = [inputs(lengths, device, dtype, seed=10 + i) for i in range(3)]
    grads = [torch.randn(sum(lengths), HEADS, HEAD_DIM, device=device, dtype=dtype) for _ in range(3)]

    def fwd(i: int) -> None:
        (q, k, v), cu, m = sets[i % 3]
        with torch.no_grad():
            attend(system, q, k, v, cu, m)

    def fwdbwd(i: int) -> None:
        (q, k, v), cu, m = sets[i % 3]
        torch.autograd.grad(attend(system, q, k, v, cu, m), (q, k, v), grads[i % 3])
    T = sum(lengths)
    f, fb = time_calls(fwd, device, warmup, repeats), time_calls(fwdbwd, device, warmup, repeats)
    return {"system": system, "sequences": len(lengths), "tokens": T, "max_len": max(lengths),
            "fwd_ms": f.step_s * 1e3, "fwdbwd_ms": fb.step_s * 1e3, "fwdbwd_tokens_per_s": T / fb.step_s,
            "peak_memory_gib": fb.peak_memory_gib}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, nargs="*", default=[64, 256])
    ap.add_argument("--lengths", type=int, nargs="*", default=[512, 2048, 8192])
    ap.add_argument("--systems", nargs="*", default=["varlen_attn", "fused varlen", *NJT, "padded sdpa"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=".")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    result = {"env": environment(device, " ".join(sys.argv)), "checks": [], "rows": []}
    passing = []
    for system in args.systems:
        c = check(system, device, dtype)
        result["checks"].append(c)
        logger.info("check %-14s %s %s", system, "PASS" if c["ok"] else "FAIL", c.get("errors") or c.get("error"))
        if c["ok"] and system == "varlen_attn":  # and at equal lengths: the dense path
            c = check(system, device, dtype, [256] * 6)
            result["checks"].append(c)
            logger.info("check %-14s %s %s (equal lengths)", system, "PASS" if c["ok"] else "FAIL", c.get("errors"))
        if c["ok"] and system in ("varlen_attn", "padded sdpa") and device.type == "cuda":
            d = check_dropout(system, device, dtype)
            result["checks"].append(d)
            logger.info("check %-14s %s %s", d["system"], "PASS" if d["ok"] else "FAIL", d["errors"])
            c = c if d["ok"] else d  # a failed dropout check keeps the system from the timings too
        if c["ok"]:
            passing.append(system)
    shapes = [(f"{n} MS MARCO pairs", msmarco_lengths(n, torch.Generator().manual_seed(0))) for n in args.pairs]
    shapes += [(f"L{L} x {max(1, 16384 // L)}", [L] * max(1, 16384 // L)) for L in args.lengths]
    if device.type == "cuda":
        for tag, lengths in shapes:
            for system in passing:
                row = {"shape": tag, **time_system(system, lengths, device, dtype, args.warmup, args.repeats)}
                result["rows"].append(row)
                logger.info("%-20s %-14s fwd %7.3f ms  fwd+bwd %7.3f ms  %8.0fK tok/s", tag, system, row["fwd_ms"],
                            row["fwdbwd_ms"], row["fwdbwd_tokens_per_s"] / 1e3)
                torch.cuda.empty_cache()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "attention.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0 if passing else 1


if __name__ == "__main__":
    sys.exit(main())

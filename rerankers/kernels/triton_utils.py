"""What the Triton kernels of both ops share: launch-side helpers (host) and ``@triton.jit`` helpers.

Imported only where a Triton backend runs (the op modules import it; ``rerankers.kernels`` does not).

Layout both ops use: packed channel-last (T, D) buffers, one channel per thread, a chunk of rows
loaded at once as a (rows, BD) tile whose rows sit in each thread's registers (so picking a row is
free), and sequence starts read from ``cu_seqlens`` as a bit mask per chunk (one binary search per
program, then a pointer that moves with the walk).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

try:  # the direct launch (:func:`launch`) is written against Triton 3.4+'s CompiledKernel.run
    from triton import knobs
    from triton.runtime.driver import driver
    _DIRECT = tuple(int(v) for v in triton.__version__.split(".")[:2]) >= (3, 4)
except (ImportError, ValueError):
    _DIRECT = False


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1`` (the kernels then run on CPU tensors: tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(x: Tensor, op: str) -> None:
    """The Triton kernels need CUDA tensors, or the interpreter (CPU tensors)."""
    if not x.is_cuda and not interpreting():
        raise RuntimeError(f"the Triton {op} needs CUDA tensors (or TRITON_INTERPRET=1 on the CPU); "
                           "use backend='reference' on the CPU")


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(x: int) -> int:
    """The smallest power of two >= x (1 for x <= 1)."""
    return 1 << max(int(x) - 1, 0).bit_length()


# The floor of the search depth: every count of sequences up to 2**LOG_S_MIN - 1 shares one compilation of
# each varlen kernel (LOG_S is a constexpr; the kernels do not specialise on S either). A deeper search costs a
# few scalar loads per program, once (benchmarks/bench_kernels.py --only log-s times it; KERNEL_NOTES.md).
LOG_S_MIN = 9


def log_s(S: int) -> int:
    """Halvings of the in-kernel binary search over cu_seqlens (S+1 entries): 2**LOG_S > S, at least
    :data:`LOG_S_MIN`."""
    return max(int(S).bit_length(), LOG_S_MIN, 1)


def row_major(x: Tensor | None) -> Tensor | None:
    """Keep row-strided views (e.g. slices of a projection); only the last dim must be unit-stride."""
    if x is None:
        return None
    return x if x.stride(-1) == 1 else x.contiguous()


# "jit": every launch through Triton's JITFunction.run (its per-call binding, specialisation and cache key); else
# (the default) a launch whose specialisation compiled before goes straight to the compiled kernel (:func:`launch`)
LAUNCH_ENV = "RERANKERS_TRITON_LAUNCH"
_COMPILED: dict[tuple, tuple] = {}


def _spec(a):
    """What Triton specialises a launch argument on, or finer: a tensor's dtype and 16-byte alignment; an int's
    width, == 1 and divisibility by 16; the value of a bool. ``...`` for anything else (no shortcut then)."""
    if isinstance(a, Tensor):
        return a.dtype, a.data_ptr() % 16 == 0
    if isinstance(a, bool) or a is None:
        return a
    if isinstance(a, int):
        return -2 ** 31 <= a < 2 ** 31, a == 1, a % 16 == 0
    if isinstance(a, float):
        return float
    return ...


def _hooked() -> bool:
    """A launch hook is set (Triton 3.6 keeps them as chains, empty by default)."""
    hooks = (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook)
    return any(h is not None and bool(getattr(h, "calls", True)) for h in hooks)


def launch(fn, grid: tuple[int, ...], *args, **kw):
    """``fn[grid](*args, **kw)``: runtime arguments positional, constexprs and launch options (num_warps,
    maxnreg) by keyword. Returns the compiled kernel. On the GPU, once a launch with the same constexprs, options
    and argument specialisations (:func:`_spec`) has compiled, the next goes to that ``CompiledKernel``
    directly: Triton's per-call binding, specialisation, cache key and global-value checks are host time on
    each of the ~270 launches of a Mamba training step (KERNEL_NOTES.md, eighth session). The interpreter, a
    launch hook (a profiler's), ``RERANKERS_TRITON_LAUNCH=jit`` or an argument it cannot key take the usual path."""
    if not _DIRECT or interpreting() or os.environ.get(LAUNCH_ENV) == "jit" or _hooked():
        return fn[grid](*args, **kw)
    specs = tuple(map(_spec, args))
    if ... in specs:
        return fn[grid](*args, **kw)
    device = driver.active.get_current_device()
    # (Triton's debug / instrumentation knobs are not in the key: set them before the first launch)
    key = (fn, device, tuple(kw.items()), specs)
    try:
        hit = _COMPILED.get(key)
    except TypeError:  # an unhashable keyword value: no shortcut
        return fn[grid](*args, **kw)
    if hit is None:
        compiled = fn[grid](*args, **kw)
        names = fn.arg_names[len(args):]
        if all(n in kw for n in names):  # every parameter after the positional ones is a constexpr passed here
            _COMPILED[key] = (compiled, tuple(kw[n] for n in names))
        return compiled
    compiled, tail = hit
    g = (*grid, 1, 1)
    compiled.run(g[0], g[1], g[2], driver.active.get_current_stream(device), compiled.function,
                 compiled.packed_metadata, None, None, None, *args, *tail)
    return compiled


def int32_cu(cu_seqlens: Tensor) -> Tensor:
    """(S+1,) int32 contiguous: the ``cu_seqlens`` the kernels read (itself where it is one: no dispatch)."""
    if cu_seqlens.dtype == torch.int32 and cu_seqlens.is_contiguous():
        return cu_seqlens
    return cu_seqlens.to(torch.int32).contiguous()


# The walks' element-wise math through the GPU's approximate instructions: ``tl.log`` compiles to libdevice's
# logf (about 25 instructions), ``tl.exp`` to a non-ftz ex2 with its denormal fix-up, ``1 / x`` to a full-range
# division; each of these is one MUFU op in PTX's ``.approx.ftz`` forms (relative error ~2^-22: far below the
# bf16 inputs' 2^-8). The interpreter has no inline PTX: there the same formulas run through exact functions.
FAST_MATH: tl.constexpr = tl.constexpr(not interpreting())
LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


@triton.jit
def _approx(x, OP: tl.constexpr):
    """PTX's ``OP.approx.ftz.f32`` of fp32 ``x``: one MUFU op (compiled kernels only)."""
    return tl.inline_asm_elementwise(f"{OP}.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True,
                                     pack=1)


@triton.jit
def _lg2(x):
    """log2(x), fp32."""
    if FAST_MATH:
        return _approx(x, "lg2")
    else:
        return tl.log2(x)


@triton.jit
def _rcp(x):
    """1 / x, fp32."""
    if FAST_MATH:
        return _approx(x, "rcp")
    else:
        return 1.0 / x


@triton.jit
def _sigmoid(x):
    """1 / (1 + exp(-x)): 0 as x -> -inf (exp2 overflows to inf, whose reciprocal is 0), 1 as x -> inf."""
    return _rcp(1.0 + tl.exp2(-x * LOG2E))


@triton.jit
def _softplus(x):
    """log(1 + exp(x)), as torch's softplus (threshold 20), to ~1e-6 relative. Below x = -2 (where Mamba's
    delta mostly lies: dt_bias starts at softplus^-1 of [1e-3, 0.1]) the series of log1p in s = exp(x) to s^8
    (truncation s^9 / 9, 1.3e-8 relative at x = -2), where log2(1 + s) would lose s to the rounding of 1 + s
    (6e-5 relative at x = -7 in fp32) and to lg2's absolute error (1e-7); above, ln 2 * log2(1 + s)."""
    s = tl.exp2(tl.minimum(x, 20.0) * LOG2E)
    series = s * (1.0 + s * (-0.5 + s * (0.3333333333333333 + s * (-0.25 + s * (0.2 + s * (
        -0.16666666666666666 + s * (0.14285714285714285 - 0.125 * s)))))))
    return tl.where(x > 20.0, x, tl.where(x < -2.0, series, LN2 * _lg2(1.0 + s)))


@triton.jit
def _lower_bound(cu_ptr, S, pos, LOG_S: tl.constexpr):
    """Smallest p in [0, S] with cu[p] >= pos (cu sorted, cu[S] = T >= pos): a branch-free binary
    search of ``LOG_S`` halvings (2**LOG_S > S)."""
    p = pos * 0
    for k in tl.static_range(LOG_S):
        q = p + (1 << (LOG_S - 1 - k))
        c = tl.load(cu_ptr + tl.minimum(q - 1, S))
        p = tl.where((q - 1 <= S) & (c < pos), q, p)
    return p


@triton.jit
def _start_bits(cu_ptr, S, p, lo, n: tl.constexpr, WIDE: tl.constexpr):
    """Bit j of the returned mask is set where row lo + j starts a sequence, j < n; the mask is int64
    if WIDE (n <= 64), else int32 (n <= 32). ``p`` is the first index with cu[p] >= lo; returns
    (mask, first index with cu >= lo + n). Empty sequences (repeated entries) set the same bit again."""
    one = lo * 0 + 1
    if WIDE:
        one = one.to(tl.int64)
    sm = one * 0
    c = tl.load(cu_ptr + tl.minimum(p, S))
    while (p <= S) & (c < lo + n):
        sm = sm | (one << (c - lo).to(one.dtype))
        p += 1
        c = tl.load(cu_ptr + tl.minimum(p, S))
    return sm, p


@triton.jit
def _start_bits_down(cu_ptr, q, lo):
    """The backward walks' :func:`_start_bits`, chunk by chunk from the end: bit j of the returned int32 mask is
    set where row lo + j starts a sequence, for the cu entries below index ``q`` that are >= lo (a walk's ``q``
    starts one past the last entry below its window's end, so those rows lie in the chunk); returns (mask, the
    first index of those entries: the next chunk's ``q``)."""
    sm = lo * 0
    c = tl.load(cu_ptr + tl.maximum(q - 1, 0))
    while (q > 0) & (c >= lo):
        sm = sm | (1 << (c - lo))
        q -= 1
        c = tl.load(cu_ptr + tl.maximum(q - 1, 0))
    return sm, q


@triton.jit
def _tile(ptr, rows, stride, offs_d, mask):
    """(BT, BD) fp32 tile of rows ``rows`` (int64) and channels ``offs_d`` of a row-major buffer."""
    return tl.load(ptr + rows[:, None] * stride + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _row(tile, rr, i):
    """Row i (constexpr) of a (BT, BD) tile whose rows sit in each thread's registers."""
    return tl.sum(tl.where(rr[:, None] == i, tile, 0.0), axis=0)

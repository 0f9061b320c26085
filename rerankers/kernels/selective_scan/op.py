"""The Triton varlen selective scan: its config, the launchers, the custom ops with their autograd
formula, and the public function (kernels: :mod:`.forward`, :mod:`.backward`).

The launchers size every buffer from upper bounds (no host synchronisation). The forward and the
backward are the custom ops ``rerankers::selective_scan_fwd`` / ``_bwd`` (``torch.compile`` traces
around them); eager calls run the same implementations without the custom-op dispatch
(:mod:`rerankers.kernels.custom_op`). Imports triton: import it only where the Triton backend runs.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from ..custom_op import kernel_op
from ..precision import as_dtype
from ..triton_utils import cdiv, check_device, int32_cu, interpreting, launch, log_s, next_pow2, row_major
from .backward import _scan_bwd_kernel, _scan_bwd_local_kernel, _scan_states_kernel
from .backward_split import _scan_bwd_split_kernel
from .forward import _scan_chain_kernel, _scan_fwd_kernel, _scan_fwd_local_kernel


@dataclass(frozen=True)
class ScanConfig:
    """Work split of the Triton scan (see :mod:`.forward`).

    window / window_bwd: tokens per program (a multiple of block_t; 0 = chosen: :func:`forward_window`,
    :func:`backward_window`); block_t: chunk length (rows loaded together; the forward stores the
    state at every chunk start for the backward, which recomputes a chunk from it); warps /
    warps_bwd: warps per program, one channel per thread (32 * warps channels per program);
    bwd_history: states the backward keeps in registers at a time (divides block_t; smaller
    recomputes more and spills less); recompute_states: keep for the backward only the state at
    every forward window start ((cdiv(T, W), N, D) fp32 instead of (cdiv(T, block_t), N, D): W /
    block_t times less memory, 64x at W = 256 with the default block_t 4) and rebuild the chunk-start states in the
    backward (one more pass like the forward, without C, z and y, into a buffer freed after it);
    fit_fwd: the forward's auto window fitted to whole waves at run time like the backward's (off: a
    power of two, which compiles the forward walk to 119 registers, against 143 at a run-time window);
    bwd_split: the backward walk with each channel's 16 states split over two lanes
    (:mod:`.backward_split`: half the state registers per thread, 16 channels a warp; opt-in: on an H200 it
    ties the default at 23K-token packs and is 1-11% slower elsewhere, KERNEL_NOTES.md "Eleventh session");
    registers / registers_bwd: a cap on the registers per thread of the forward walks (walk, local
    pass, state rebuild) / of the backward walk (ptxas ``maxnreg``; 0 = the compiler's choice; GPU only):
    128 keeps 4 forward programs per SM at a run-time window (28 bytes of spills, sm_90; the default since the
    sixth session), 168 gives the backward 3 instead of 2 (1.6 KB of spills; 39% slower, not taken).
    A fitted window depends on T, and the forward's fake sizes the saved states from it: traced by
    torch.compile, :func:`selective_scan_triton` turns fit_fwd off (one graph for every token count).
    """
    window: int = 0
    window_bwd: int = 0
    block_t: int = 8
    warps: int = 4
    warps_bwd: int = 4
    bwd_history: int = 4
    recompute_states: bool = False
    fit_fwd: bool = False
    registers: int = 0
    registers_bwd: int = 0
    bwd_split: bool = False


# measured on an H100 (benchmarks/KERNEL_NOTES.md); recompute_states on by default since the H200 run of the
# third 2026-12-01 session: the scan's fwd+bwd time unchanged (4.54 vs 4.55 ms at 23K tokens, D 2048), a
# mamba-370m training step at 256 pairs 68.7K vs 68.1K real tok/s and 35.0 vs 51.7 GiB (BENCHMARKS.md). Since the
# sixth session (H200, KERNEL_NOTES.md): fit_fwd with registers=128, the forward 0.975 -> 0.624 ms at 23K tokens
# (D 1536) and mamba-130m's step at 256 pairs 132.2 -> 125.1 ms; block_t 4 (the backward recomputes each chunk
# once, no re-advance of a second sub-chunk), the scan's fwd+bwd 3.10 -> 2.70 ms at that pack.
DEFAULT_CONFIG = ScanConfig(block_t=4, recompute_states=True, fit_fwd=True, registers=128)
INTERPRET_CONFIG = ScanConfig(window=16, window_bwd=24, block_t=8, warps=1, warps_bwd=1, bwd_history=4,
                              recompute_states=True)
CHAIN_GROUP = 8  # windows whose loads the carry pass issues together
# "0": calls without an explicit config keep every chunk-start state (recompute_states=False); "1": recompute
RECOMPUTE_ENV = "RERANKERS_SCAN_RECOMPUTE"
# "field=value,...": fields of the default config replaced, e.g. "fit_fwd=1,registers=128" (a lever at the step)
CONFIG_ENV = "RERANKERS_SCAN_CONFIG"
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _config_overrides(text: str) -> dict[str, int | bool]:
    """``field=value`` pairs of :data:`CONFIG_ENV`; a ValueError naming the variable and the item otherwise."""
    names = [f.name for f in fields(ScanConfig)]
    out: dict[str, int | bool] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        key, sep, val = (x.strip() for x in item.partition("="))
        if not sep or key not in names:
            raise ValueError(f"{CONFIG_ENV}: {item!r} is not field=value with a field of ScanConfig "
                             f"({', '.join(names)})")
        if key in _BOOLS:
            if val.lower() not in _ON + _OFF:
                raise ValueError(f"{CONFIG_ENV}: {key} takes 0 or 1, got {val!r}")
            out[key] = val.lower() in _ON
        else:
            try:
                out[key] = int(val)
            except ValueError:
                raise ValueError(f"{CONFIG_ENV}: {key} takes an integer, got {val!r}") from None
    return out


def default_config() -> ScanConfig:
    """:data:`DEFAULT_CONFIG` (:data:`INTERPRET_CONFIG` under the interpreter), ``recompute_states`` as the
    environment variable ``RERANKERS_SCAN_RECOMPUTE`` says (0 / 1; unset or anything else: the default, on),
    then the fields that ``RERANKERS_SCAN_CONFIG`` sets ("fit_fwd=1,registers=128")."""
    if not os.environ.get(RECOMPUTE_ENV, "").strip() and not os.environ.get(CONFIG_ENV, "").strip():
        return INTERPRET_CONFIG if interpreting() else DEFAULT_CONFIG
    return _unflat(*_env_config())


@torch.compiler.assume_constant_result
def _env_config() -> tuple[int | bool, ...]:
    """:func:`default_config` under the environment's settings, flat (:func:`_flat`): run eagerly, also while
    torch.compile traces a caller (the parsing's ``dataclasses.fields`` cannot be traced)."""
    cfg = INTERPRET_CONFIG if interpreting() else DEFAULT_CONFIG
    flag = os.environ.get(RECOMPUTE_ENV, "").strip().lower()
    if flag in _ON or flag in _OFF:
        cfg = replace(cfg, recompute_states=flag in _ON)
    text = os.environ.get(CONFIG_ENV, "")
    return _flat(replace(cfg, **_config_overrides(text)) if text.strip() else cfg)


def _check_config(cfg: ScanConfig) -> None:
    if cfg.block_t & (cfg.block_t - 1) or not 1 <= cfg.block_t <= 256:
        raise ValueError(f"block_t must be a power of two in 1..256 (windows are), got {cfg.block_t}")
    for name in ("window", "window_bwd"):
        if getattr(cfg, name) % cfg.block_t:
            raise ValueError(f"{name} {getattr(cfg, name)} must be a multiple of block_t {cfg.block_t}")
    if cfg.block_t % cfg.bwd_history:
        raise ValueError(f"bwd_history {cfg.bwd_history} must divide block_t {cfg.block_t}")
    for name in ("registers", "registers_bwd"):
        r = getattr(cfg, name)
        if r and not (24 <= r <= 248 and r % 8 == 0):
            raise ValueError(f"{name} must be 0 (the compiler's choice) or a multiple of 8 in 24..248, got {r}")
    for name in ("warps", "warps_bwd"):
        if getattr(cfg, name) not in (1, 2, 4, 8, 16):
            raise ValueError(f"{name} must be 1, 2, 4, 8 or 16 (warps per program), got {getattr(cfg, name)}")
    for name in ("window", "window_bwd"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be 0 (chosen) or a positive multiple of block_t, got {getattr(cfg, name)}")


# the custom ops' order
_FLAT = ("window", "block_t", "warps", "window_bwd", "warps_bwd", "bwd_history", "recompute_states", "fit_fwd",
         "registers", "registers_bwd", "bwd_split")
_BOOLS = ("recompute_states", "fit_fwd", "bwd_split")


@functools.lru_cache(maxsize=64)
def _flat(cfg: ScanConfig) -> tuple[int | bool, ...]:
    """The config as the custom ops take it (their schemas hold no dataclass); cached, as ``config_args``."""
    return tuple(bool(getattr(cfg, f)) if f in _BOOLS else int(getattr(cfg, f)) for f in _FLAT)


def _unflat(*ints: int | bool) -> ScanConfig:
    return ScanConfig(**dict(zip(_FLAT, ints)))


def _record(stats: dict | None, name: str, compiled) -> None:
    """Registers / spills of a launched kernel into ``stats`` (where the caller asked for them)."""
    if stats is None:
        return
    try:
        stats[name] = dict(n_regs=int(compiled.n_regs), n_spills=int(compiled.n_spills))
    except (AttributeError, TypeError, ValueError):  # interpreter / other Triton versions
        pass


@functools.lru_cache(maxsize=8)
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _sms(device: torch.device) -> int:
    """The GPU's SMs (an H200's 132 where no GPU is asked: the interpreter, window tests)."""
    return _num_sms(device.index or 0) if device.type == "cuda" else 132


def pick_window(window: int, T: int, Dm: int, warps: int, block_t: int, device: torch.device,
                channels: int = 0) -> int:
    """``window`` if set, else the largest power of two (block_t..256) that still gives about four
    programs per SM (a constexpr window: a power of two compiles the forward walk to 119 registers, 4
    programs per SM, where other windows take 143). ``channels``: per program (0: one a thread, 32 * warps)."""
    if window:
        return window
    want = 4 * _sms(device)
    w = 256
    while w > block_t and cdiv(T, w) * cdiv(Dm, channels or 32 * warps) < want:
        w //= 2
    return w


# Registers per thread at the compiler's choice (sm_90, Triton 3.6; bench_kernels.py records them): the forward walk
# takes 143 at a run-time window (3 programs of 4 warps per SM; 119 and 4 at a power-of-two constexpr one), the
# backward walk 255 either way (2 per SM: 264 programs in one wave on an H200).
FWD_REGISTERS_RUNTIME = 143
BWD_REGISTERS = 255
BWD_SPLIT_REGISTERS = 128  # the split backward walk (bwd_split) at its default cap: 4 programs per SM (168: 3, slower)
WINDOW_MAX = 512  # the longest window a fit considers (tokens); the chunk loops' bound at run-time windows
PROGRAM_COST = 16  # a program's fixed work (binary search over cu_seqlens, loads of A / the carry), in token steps


def resident_programs(warps: int, registers: int = BWD_REGISTERS) -> int:
    """Programs of a kernel an SM holds at once: 64K registers and 64 warps per SM (sm_80 / sm_90; sm_86 / sm_89
    hold 48 warps, where the fit is then a little off, never wrong)."""
    return max(1, min(65536 // (registers * 32 * warps), 64 // warps))


@functools.lru_cache(maxsize=1024)
def _fit_window(T: int, Dm: int, channels: int, block_t: int, slots: int) -> int:
    """The window (a multiple of block_t, at most WINDOW_MAX) that minimises
    ceil(programs / slots) * (min(window, T) + PROGRAM_COST): every program walks its window's tokens one
    after another, so a grid takes as many window walks as it has waves, and a part-filled last wave costs
    a whole one. Ties go to the longer window (fewer carries between windows). ``channels``: per program."""
    blocks = cdiv(Dm, channels)
    best, best_cost = block_t, None
    for w in range(block_t, max(WINDOW_MAX, block_t) + 1, block_t):
        cost = cdiv(cdiv(T, w) * blocks, slots) * (min(w, T) + PROGRAM_COST)
        if best_cost is None or cost <= best_cost:
            best, best_cost = w, cost
        if w >= T:  # longer windows only add chunks past the end
            break
    return best


def _fitted(T: int, S: int, Dm: int, warps: int, block_t: int, registers: int, pow2: int,
            device: torch.device, channels: int = 0) -> int | None:
    """The window fitted to whole waves of programs of ``registers`` per thread (:func:`_fit_window`), or None
    where the sequences are on average longer than the power-of-two window ``pow2``: there every window's
    first piece is carried and the local pass walks whole windows, which the waves count does not see (the
    fit measured 5-6% slower at B8xL2048 and B1xL16384)."""
    if S <= 0 or T > S * pow2:
        return None
    return _fit_window(max(int(T), 1), int(Dm), channels or 32 * warps, block_t,
                       resident_programs(warps, registers) * _sms(device))


def _auto_window(T: int, S: int, Dm: int, warps: int, block_t: int, registers: int, fit: bool,
                 device: torch.device, channels: int = 0) -> tuple[int, bool]:
    """(window length, run time?) chosen for a walk: with ``fit`` the fitted window (:func:`_fitted`, a
    run-time length) where it applies, else :func:`pick_window`'s power of two (a constexpr). ``channels``:
    per program (0: one a thread)."""
    pow2 = pick_window(0, T, Dm, warps, block_t, device, channels)
    w = _fitted(T, S, Dm, warps, block_t, registers, pow2, device, channels) if fit else None
    return (w, True) if w else (pow2, False)


def forward_window(cfg: ScanConfig, T: int, S: int, Dm: int, device: torch.device) -> tuple[int, bool]:
    """(window length, run time?) of the forward walks (the walk, its local pass and the state rebuild of
    ``recompute_states``): ``cfg.window`` as a constexpr if set; else with ``cfg.fit_fwd`` the window
    fitted to whole waves (:func:`_fitted`, at run time), else :func:`pick_window`'s power of two."""
    if cfg.window:
        return cfg.window, False
    return _auto_window(T, S, Dm, cfg.warps, cfg.block_t, cfg.registers or FWD_REGISTERS_RUNTIME, cfg.fit_fwd,
                        device)


def backward_window(cfg: ScanConfig, T: int, S: int, Dm: int, device: torch.device) -> tuple[int, bool]:
    """(window length, run time?) of the backward walk and its local pass: ``cfg.window_bwd`` as a
    constexpr if set, else the window fitted to whole waves (at run time) where the sequences are short,
    else :func:`pick_window`'s power of two.

    Measured on an H200 (KERNEL_NOTES.md, fifth session), the fit against the power of two: the scan's
    fwd+bwd 3.94 -> 3.54 ms at 23K tokens, D 1536, and 4.61 -> 4.35 ms at D 2048; mamba-130m's training
    step at 256 pairs 141.6 -> 132.6 ms."""
    if cfg.window_bwd:
        return cfg.window_bwd, False
    if cfg.bwd_split:
        return _auto_window(T, S, Dm, cfg.warps_bwd, cfg.block_t, cfg.registers_bwd or BWD_SPLIT_REGISTERS, True,
                            device, channels=16 * cfg.warps_bwd)
    return _auto_window(T, S, Dm, cfg.warps_bwd, cfg.block_t, cfg.registers_bwd or BWD_REGISTERS, True, device)


def _launch_options(warps: int, registers: int) -> dict:
    """Triton launch options: the warps, and ptxas' register cap where one is set (compiled kernels only)."""
    return dict(num_warps=warps, **({"maxnreg": registers} if registers and not interpreting() else {}))


def _loop_bound(W: int, runtime: bool) -> int:
    """The constexpr ``W`` a launch passes: the window itself, or :func:`window_bound` of a run-time one."""
    return window_bound(W) if runtime else W


def window_bound(W: int) -> int:
    """The constexpr bound of the chunk loops for a run-time window of ``W`` tokens: :data:`WINDOW_MAX` on the
    GPU (one compilation for every fitted window), the window's power of two under the interpreter (where
    every loop step runs in Python)."""
    return next_pow2(W) if interpreting() else max(WINDOW_MAX, next_pow2(W))


def _states_major(A: Tensor) -> Tensor:
    """A (D, N) as the kernels read it: (N, D) fp32, channels contiguous. Free where A is the transpose of such a
    tensor (Mamba's mixer builds it so); else one copy."""
    A_t = A.t()
    if A_t.dtype == torch.float32 and A_t.is_contiguous():
        return A_t
    return A_t.contiguous().float()


def _chain(vec: Tensor, dts: Tensor, flag: Tensor, A_t: Tensor, reverse: bool) -> Tensor:
    n_win, N, Dm = vec.shape
    if n_win == 1:  # nothing to carry (and Triton's coalesce pass trips over the empty loop)
        return torch.zeros_like(vec)
    out = torch.empty_like(vec)
    launch(_scan_chain_kernel, (cdiv(Dm, 32),), vec, dts, flag, A_t, out, Dm, n_win, Dm, N, REVERSE=reverse,
           G=CHAIN_GROUP, BD=32, NP=next_pow2(N), num_warps=1)
    return out


def launch_forward(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                   z: Tensor | None, delta_bias: Tensor | None, cu_seqlens: Tensor, delta_softplus: bool,
                   cfg: ScanConfig, stats: dict | None = None) -> tuple[Tensor, Tensor]:
    """Returns y (T, D) and what the backward needs of the states, fp32: the state before every chunk
    of block_t tokens, (cdiv(T, block_t), N, D), or with ``cfg.recompute_states`` the state entering
    every window of W tokens, (cdiv(T, W), N, D). ``stats``: a dict to record the kernels' registers /
    spills into (benchmarks)."""
    u, delta, B, C, z = (row_major(t) for t in (u, delta, B, C, z))
    T, Dm = u.shape
    N = A.shape[1]
    S = cu_seqlens.numel() - 1
    block_t, warps = cfg.block_t, cfg.warps
    y = torch.empty((T, Dm), dtype=u.dtype, device=u.device)
    W, runtime = forward_window(cfg, T, S, Dm, u.device)
    n_win = cdiv(T, W)
    if cfg.recompute_states:
        states = None  # hin below
        if T == 0 or S == 0:
            return y, torch.zeros((n_win, N, Dm), dtype=torch.float32, device=u.device)
    else:
        states = torch.empty((cdiv(T, block_t), N, Dm), dtype=torch.float32, device=u.device)
        if T == 0 or S == 0:
            return y, states
    A_t = _states_major(A)  # (N, D)
    cu = int32_cu(cu_seqlens)
    f32 = dict(dtype=torch.float32, device=u.device)
    send, dts = torch.empty((n_win, N, Dm), **f32), torch.empty((n_win, Dm), **f32)
    flag = torch.empty((n_win,), dtype=torch.int32, device=u.device)
    bp = delta_bias if delta_bias is not None else u
    grid = (n_win, cdiv(Dm, 32 * warps))
    consts = dict(LOG_S=log_s(S), HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
                  W=_loop_bound(W, runtime), RUNTIME_WL=runtime, BT=block_t, BD=32 * warps, NP=next_pow2(N),
                  EVEN_N=next_pow2(N) == N,
                  **_launch_options(warps, cfg.registers))
    k = launch(_scan_fwd_local_kernel, grid, u, delta, A_t, B, bp, send, dts, flag, cu, u.stride(0), delta.stride(0),
               B.stride(0), Dm, T, Dm, N, S, W, **consts)
    _record(stats, "fwd_local", k)
    hin = _chain(send, dts, flag, A_t, reverse=False)
    k = launch(_scan_fwd_kernel, grid,
        u, delta, A_t, B, C, D if D is not None else u, z if z is not None else u, bp, y, hin,
        states if states is not None else hin, cu,
        u.stride(0), delta.stride(0), B.stride(0), C.stride(0), z.stride(0) if z is not None else 0, y.stride(0),
        Dm, T, Dm, N, S, W, HAS_D=D is not None, HAS_Z=z is not None, STORE_STATES=states is not None, **consts)
    _record(stats, "fwd", k)
    return y, states if states is not None else hin


def recompute_chunk_states(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Tensor | None,
                           cu_seqlens: Tensor, hin: Tensor, delta_softplus: bool, cfg: ScanConfig,
                           stats: dict | None = None) -> Tensor:
    """The (cdiv(T, block_t), N, D) fp32 chunk-start states that the forward with ``cfg`` stores
    without ``recompute_states``, rebuilt from its window-start states ``hin`` (cdiv(T, W), N, D)."""
    u, delta, B = (row_major(t) for t in (u, delta, B))
    T, Dm = u.shape
    N = A.shape[1]
    S = cu_seqlens.numel() - 1
    block_t, warps = cfg.block_t, cfg.warps
    W, runtime = forward_window(cfg, T, S, Dm, u.device)
    n_win = cdiv(T, W)
    if tuple(hin.shape) != (n_win, N, Dm):
        raise ValueError(f"window-start states of shape {(n_win, N, Dm)} expected (windows of {W} tokens), "
                         f"got {tuple(hin.shape)}")
    states = torch.empty((cdiv(T, block_t), N, Dm), dtype=torch.float32, device=u.device)
    if T == 0 or S == 0:
        return states
    bp = delta_bias if delta_bias is not None else u
    k = launch(_scan_states_kernel, (n_win, cdiv(Dm, 32 * warps)),
        u, delta, _states_major(A), B, bp, hin.contiguous(), states, int32_cu(cu_seqlens),
        u.stride(0), delta.stride(0), B.stride(0), Dm, T, Dm, N, S, W,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, LOG_S=log_s(S), W=_loop_bound(W, runtime),
        RUNTIME_WL=runtime, BT=block_t, BD=32 * warps, NP=next_pow2(N), EVEN_N=next_pow2(N) == N,
        **_launch_options(warps, cfg.registers))
    _record(stats, "states", k)
    return states


def _split_consts(consts: dict, N: int, warps: int) -> dict:
    """The plain walk's constexprs as the split walk takes them: BV threads (two a channel), NH states a lane
    (NP = 2 NH >= N, at least 2) and its butterfly's rounds (:func:`.backward_split._channel_sums`)."""
    out = {k: v for k, v in consts.items() if k not in ("BD", "NP", "EVEN_N")}
    NP = max(2, next_pow2(N))
    rounds = min((NP).bit_length() - 1, 4)  # log2(2 NH) halvings, at most the 4 channel bits of a lane
    return dict(out, BV=32 * warps, NH=NP // 2, EVEN_N=NP == N, ROUNDS=rounds, EXTRA=4 - rounds)


def launch_backward(dy: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                    z: Tensor | None, delta_bias: Tensor | None, cu_seqlens: Tensor, states: Tensor,
                    delta_softplus: bool, cfg: ScanConfig, stats: dict | None = None
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns du, ddelta, dA, dB, dC, dD, dz, ddelta_bias (empty tensors for absent inputs), with
    the backward's window_bwd / warps_bwd / bwd_history of ``cfg``; ``states``: the forward's second
    output for the same ``cfg`` (with ``recompute_states`` the window-start states, from which the
    chunk-start states are rebuilt first); ``stats`` as in the forward."""
    dy, u, delta, B, C, z = (row_major(t) for t in (dy, u, delta, B, C, z))
    if cfg.recompute_states:
        states = recompute_chunk_states(u, delta, A, B, delta_bias, cu_seqlens, states, delta_softplus, cfg, stats)
    T, Dm = u.shape
    N = A.shape[1]
    S = cu_seqlens.numel() - 1
    block_t, warps = cfg.block_t, cfg.warps_bwd
    dev = u.device
    du = torch.empty((T, Dm), dtype=u.dtype, device=dev)
    ddelta = torch.empty((T, Dm), dtype=delta.dtype, device=dev)
    dz = torch.empty((T, Dm), dtype=z.dtype, device=dev) if z is not None else u.new_empty((0,))
    # summed with atomics (fp32); outputs of a custom op may not alias each other, so no shared buffer
    dB, dC = torch.zeros((T, N), dtype=torch.float32, device=dev), torch.zeros((T, N), dtype=torch.float32, device=dev)
    dA_t = torch.zeros((N, Dm), dtype=torch.float32, device=dev)
    dD, dbias = torch.zeros((Dm,), dtype=torch.float32, device=dev), torch.zeros((Dm,), dtype=torch.float32, device=dev)
    if T > 0 and S > 0:
        A_t = _states_major(A)
        cu = int32_cu(cu_seqlens)
        W, runtime = backward_window(cfg, T, S, Dm, dev)
        n_win = cdiv(T, W)
        f32 = dict(dtype=torch.float32, device=dev)
        gin, dts = torch.empty((n_win, N, Dm), **f32), torch.empty((n_win, Dm), **f32)
        flag = torch.empty((n_win,), dtype=torch.int32, device=dev)
        zp = z if z is not None else u
        bp = delta_bias if delta_bias is not None else u
        grid = (n_win, cdiv(Dm, 32 * warps))
        consts = dict(LOG_S=log_s(S), HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
                      W=_loop_bound(W, runtime), RUNTIME_WL=runtime, BT=block_t, BD=32 * warps,
                      NP=next_pow2(N), EVEN_N=next_pow2(N) == N)
        k = launch(_scan_bwd_local_kernel, grid, dy, delta, A_t, C, zp, bp, gin, dts, flag, cu, dy.stride(0),
                   delta.stride(0), C.stride(0), zp.stride(0), Dm, T, Dm, N, S, W, **consts, num_warps=warps)
        _record(stats, "bwd_local", k)
        gout = _chain(gin, dts, flag, A_t, reverse=True)
        dzp = dz if z is not None else du
        args = (dy, u, delta, A_t, B, C, D if D is not None else u, zp, bp, states, gout, cu,
                du, ddelta, dzp, dB, dC, dA_t, dD, dbias,
                dy.stride(0), u.stride(0), delta.stride(0), B.stride(0), C.stride(0), zp.stride(0),
                du.stride(0), ddelta.stride(0), dzp.stride(0), Dm, T, Dm, N, S, W)
        if cfg.bwd_split:
            k = launch(_scan_bwd_split_kernel, (n_win, cdiv(Dm, 16 * warps)), *args, HAS_D=D is not None,
                       BH=cfg.bwd_history, **_split_consts(consts, N, warps),
                       **_launch_options(warps, cfg.registers_bwd or BWD_SPLIT_REGISTERS))
        else:
            k = launch(_scan_bwd_kernel, grid, *args,
                       HAS_D=D is not None, BH=cfg.bwd_history, BFLY=next_pow2(N) == 16 and not interpreting(),
                       **consts, **_launch_options(warps, cfg.registers_bwd))
        _record(stats, "bwd", k)
    else:
        du.zero_(), ddelta.zero_(), dz.zero_()
    dDo = as_dtype(dD, D.dtype) if D is not None else u.new_empty((0,))
    dbo = as_dtype(dbias, delta_bias.dtype) if delta_bias is not None else u.new_empty((0,))
    # in A's layout: a view where A is the transpose of a states-major tensor, else a copy
    dA = as_dtype(dA_t.t(), A.dtype)
    dA = dA if dA.stride() == A.stride() else dA.contiguous()
    return du, ddelta, dA, as_dtype(dB, B.dtype), as_dtype(dC, C.dtype), dDo, dz, dbo


# ---- the custom ops (the config as the six ints of _FLAT) and their autograd formula
def _fwd_impl(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
              z: Tensor | None, delta_bias: Tensor | None, cu_seqlens: Tensor,
              delta_softplus: bool, window: int, block_t: int, warps: int, window_bwd: int,
              warps_bwd: int, bwd_history: int, recompute_states: bool, fit_fwd: bool, registers: int,
              registers_bwd: int, bwd_split: bool) -> tuple[Tensor, Tensor]:
    cfg = _unflat(window, block_t, warps, window_bwd, warps_bwd, bwd_history, recompute_states, fit_fwd, registers,
                  registers_bwd, bwd_split)
    return launch_forward(u, delta, A, B, C, D, z, delta_bias, cu_seqlens, delta_softplus, cfg)


def _fwd_fake(u, delta, A, B, C, D, z, delta_bias, cu_seqlens, delta_softplus, window, block_t, warps, window_bwd,
              warps_bwd, bwd_history, recompute_states, fit_fwd, registers, registers_bwd, bwd_split):
    T, Dm = u.shape
    cfg = _unflat(window, block_t, warps, window_bwd, warps_bwd, bwd_history, recompute_states, fit_fwd, registers,
                  registers_bwd, bwd_split)
    S = cu_seqlens.shape[0] - 1
    stride = forward_window(cfg, T, S, Dm, u.device)[0] if recompute_states else block_t
    return u.new_empty((T, Dm)), u.new_empty((cdiv(T, stride), A.shape[1], Dm), dtype=torch.float32)


def _bwd_impl(dy: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
              D: Tensor | None, z: Tensor | None, delta_bias: Tensor | None,
              cu_seqlens: Tensor, states: Tensor, delta_softplus: bool, window: int, block_t: int,
              warps: int, window_bwd: int, warps_bwd: int, bwd_history: int, recompute_states: bool,
              fit_fwd: bool, registers: int, registers_bwd: int, bwd_split: bool
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    cfg = _unflat(window, block_t, warps, window_bwd, warps_bwd, bwd_history, recompute_states, fit_fwd, registers,
                  registers_bwd, bwd_split)
    return launch_backward(dy, u, delta, A, B, C, D, z, delta_bias, cu_seqlens, states, delta_softplus, cfg)


def _bwd_fake(dy, u, delta, A, B, C, D, z, delta_bias, cu_seqlens, states, delta_softplus, window, block_t, warps,
              window_bwd, warps_bwd, bwd_history, recompute_states, fit_fwd, registers, registers_bwd, bwd_split):
    e = u.new_empty((0,))
    return (torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A), torch.empty_like(B),
            torch.empty_like(C), torch.empty_like(D) if D is not None else e,
            torch.empty_like(z) if z is not None else e,
            torch.empty_like(delta_bias) if delta_bias is not None else e)


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, cu_seqlens, delta_softplus = inputs[:10]
    _, states = output
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, cu_seqlens, states)
    ctx.args = (delta_softplus, *inputs[10:])
    ctx.has = (D is not None, z is not None, delta_bias is not None)


def _backward(ctx, bwd, dy, _ds):
    u, delta, A, B, C, D, z, delta_bias, cu_seqlens, states = ctx.saved_tensors
    du, ddelta, dA, dB, dC, dD, dz, dbias = bwd(
        dy.contiguous(), u, delta, A, B, C, D, z, delta_bias, cu_seqlens, states, *ctx.args)
    has_D, has_z, has_bias = ctx.has
    return (du, ddelta, dA, dB, dC, dD if has_D else None, dz if has_z else None,
            dbias if has_bias else None, *(None,) * (2 + len(_FLAT)))


_op = kernel_op("selective_scan", _fwd_impl, _fwd_fake, _bwd_impl, _bwd_fake, _setup_context, _backward)


def selective_scan_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                          z: Tensor | None, delta_bias: Tensor | None, cu_seqlens: Tensor,
                          delta_softplus: bool = True, config: ScanConfig | None = None,
                          direct: bool = True) -> Tensor:
    """Triton varlen selective scan (see :func:`rerankers.kernels.selective_scan_varlen`).

    config: the work split (None: :func:`default_config`: :data:`DEFAULT_CONFIG`, or
    :data:`INTERPRET_CONFIG` under the interpreter, ``recompute_states`` off with
    ``RERANKERS_SCAN_RECOMPUTE=0``); direct: eager calls skip the custom-op dispatch (False: always
    the custom ops).
    """
    check_device(u, "selective scan")
    cfg = config or default_config()
    _check_config(cfg)
    if cfg.fit_fwd and torch.compiler.is_compiling():
        # traced (torch.compile): a fitted window sizes the saved states from T, so with dynamic shapes it would
        # specialise the graph on every token count; the traced forward keeps its power-of-two window (static
        # token budgets lose the fit's few percent there, KERNEL_NOTES.md, sixth session)
        cfg = replace(cfg, fit_fwd=False)
    y, _ = _op(u, delta, A, B, C, D, z, delta_bias, cu_seqlens, delta_softplus, *_flat(cfg), direct=direct)
    return y

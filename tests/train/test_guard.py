"""The guarded optimizer step (a NaN / inf never reaches the weights, with or without a host check), the step
numbers' read-back, and the step clock."""
from __future__ import annotations

import math

import pytest
import torch

from rerankers.train.guard import defers, guarded_step
from rerankers.train.progress import StepClock, StepTimer
from rerankers.utils.device import ReadBack


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(3, 4, generator=gen)), torch.nn.Parameter(torch.randn(5, generator=gen))]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen)
    return ps


def _raise(what: str, value: float):
    raise FloatingPointError(f"{what} {value}")


@pytest.mark.parametrize("fused", [True, False])
def test_a_finite_step_is_the_plain_clipped_adamw_step(fused):
    ps, ref = _params(), _params()
    opt = torch.optim.AdamW(ps, lr=0.1, fused=fused) if fused else torch.optim.AdamW(ps, lr=0.1, foreach=False)
    ref_opt = torch.optim.AdamW(ref, lr=0.1, fused=fused) if fused else torch.optim.AdamW(ref, lr=0.1, foreach=False)
    assert defers(opt) == fused
    for _ in range(3):
        norm = guarded_step(opt, ps, torch.tensor(0.5), 0.1, _raise)
        ref_norm = torch.nn.utils.clip_grad_norm_(ref, 0.1)
        ref_opt.step()
        assert norm.dim() == 0 and torch.equal(norm, ref_norm)
    for p, q in zip(ps, ref):
        assert torch.equal(p, q)
    assert all(int(opt.state[p]["step"]) == 3 for p in ps)


@pytest.mark.parametrize("bad", ["loss", "gradient norm"])
def test_a_fused_step_with_a_non_finite_loss_or_norm_is_skipped_on_the_device(bad):
    ps = _params()
    opt = torch.optim.AdamW(ps, lr=0.1, fused=True)
    guarded_step(opt, ps, torch.tensor(1.0), 1.0, _raise)  # one real step: moments and a step count to keep
    before = [p.detach().clone() for p in ps]
    moments = [opt.state[p]["exp_avg"].clone() for p in ps]
    loss = torch.tensor(math.nan if bad == "loss" else 1.0)
    if bad == "gradient norm":
        ps[0].grad[0, 0] = math.inf
    norm = guarded_step(opt, ps, loss, 1.0, _raise)  # no host check: nothing raises
    assert bad == "loss" or not math.isfinite(float(norm))
    for p, b, m in zip(ps, before, moments):
        assert torch.equal(p, b) and torch.equal(opt.state[p]["exp_avg"], m) and int(opt.state[p]["step"]) == 1


def test_an_unfused_step_checks_on_the_host_before_the_update():
    ps = _params()
    opt = torch.optim.AdamW(ps, lr=0.1, foreach=False)
    before = [p.detach().clone() for p in ps]
    with pytest.raises(FloatingPointError, match="loss nan"):
        guarded_step(opt, ps, torch.tensor(math.nan), 1.0, _raise)
    ps[1].grad[0] = math.nan
    with pytest.raises(FloatingPointError, match="gradient norm nan"):
        guarded_step(opt, ps, torch.tensor(1.0), 1.0, _raise)
    assert all(torch.equal(p, b) for p, b in zip(ps, before)) and not opt.state
    norm = guarded_step(opt, _params(1), torch.tensor(1.0), None, _raise)  # no clipping: the norm is NaN
    assert math.isnan(float(norm))


def test_read_back_gives_the_numbers_as_floats():
    numbers = ReadBack(torch.tensor([1.5, 2.0, math.inf], dtype=torch.float32))
    assert numbers.values() == [1.5, 2.0, math.inf]


def test_step_clock_laps_follow_each_other_and_restart_breaks_the_chain():
    clock = StepClock(torch.device("cpu"))
    with pytest.raises(RuntimeError, match="restart"):
        clock.lap()
    clock.restart()
    a, b = clock.lap(), clock.lap()
    assert a[1] == b[0] and StepClock.seconds(a) >= 0
    clock.restart()
    c = clock.lap()
    assert c[0] > b[1]
    timer = StepTimer(torch.device("cpu"), flops_per_token=1.0, warmup=0)
    timer.restart()
    for tokens in (100, 300):
        timer.record(timer.lap(), tokens, tokens / 100)
    summary = timer.summary()
    assert summary["tokens_per_s"] == pytest.approx(400 / sum(timer.seconds))
    assert summary["mean_step_s"] == pytest.approx(sum(timer.seconds) / 2)

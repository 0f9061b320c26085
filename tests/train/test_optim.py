"""AdamW groups (no decay on A_log, D, norms, biases) and the learning-rate schedules."""
import math

import pytest
import torch
from torch import nn

from rerankers.train.optim import build_optimizer, build_scheduler, lr_factor, param_groups


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.A_log = nn.Parameter(torch.zeros(4, 2))
        self.D = nn.Parameter(torch.ones(4))
        self.emb = nn.Embedding(10, 4)


def test_no_decay_on_ssm_parameters_norms_and_biases():
    m = _Toy()
    decay, no_decay = param_groups(m, 0.1)
    names = {id(p): n for n, p in m.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["emb.weight", "proj.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["A_log", "D", "norm.bias", "norm.weight", "proj.bias"]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(getattr(p, "_no_weight_decay", False) for p in no_decay["params"])


def test_mamba_backbone_marks():
    from rerankers.models.mamba import MambaBackbone
    from rerankers.models.mamba_config import MambaConfig
    m = MambaBackbone(MambaConfig(d_model=16, n_layer=2, vocab_size=32, d_state=4))
    _, no_decay = param_groups(m, 0.01)
    names = {id(p): n for n, p in m.named_parameters()}
    marked = {names[id(p)] for p in no_decay["params"]}
    assert {"layers.0.mixer.A_log", "layers.1.mixer.D", "norm_f.weight", "layers.0.norm.weight",
            "layers.0.mixer.dt_proj.bias"} <= marked
    assert "layers.0.mixer.in_proj.weight" not in marked


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_warmup_then_schedule(schedule):
    f = [lr_factor(s, 110, 10, schedule) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    expected_mid = {"linear": 0.5, "cosine": 0.5, "constant": 1.0}[schedule]
    assert f[60] == pytest.approx(expected_mid)
    if schedule != "constant":
        assert f[109] < 0.03 and all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(85, 110, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))


def test_scheduler_drives_the_optimizer():
    m = _Toy()
    opt = build_optimizer(m, 1e-3, 0.01, torch.device("cpu"))
    sched = build_scheduler(opt, total_steps=20, warmup_steps=4, schedule="linear")
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[5] < lrs[4]


def test_a_head_learning_rate_of_its_own():
    class WithHead(_Toy):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 1)

    m = WithHead()
    opt = build_optimizer(m, 1e-5, 0.01, torch.device("cpu"), head_lr=1e-3)
    rates = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert rates[id(m.head.weight)] == rates[id(m.head.bias)] == 1e-3
    assert rates[id(m.proj.weight)] == rates[id(m.A_log)] == 1e-5
    assert len(rates) == len(list(m.parameters()))
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(m.head.bias)] == 0.0 and decay[id(m.head.weight)] == 0.01

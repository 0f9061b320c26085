"""On the GPU: a training step never makes the host wait for the GPU (``torch.cuda.set_sync_debug_mode("error")``
raises on any synchronising call), in ``rerank train``'s loop and in the bench's step, for Mamba and BERT.

One ``.item()``, one pageable host-to-device copy or one ``nonzero`` in a step serialises the host's queueing of
step k+1 with the GPU's work on step k (issue 13); this is the guard against one coming back. CUDA only (the
Triton kernels compiled): skipped on the CPU and under the interpreter."""
from __future__ import annotations

import copy
import os

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                                reason="needs a CUDA device and compiled Triton kernels")


def _strict(fn):
    """``fn`` run with every synchronising CUDA call an error."""
    def run(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return fn(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return run


@pytest.mark.parametrize("kind", ["bert", "mamba"])
def test_the_loops_steps_never_wait_for_the_gpu(kind, tiny_bert_dir, tiny_mamba_dir, sample_training, tmp_path,
                                                monkeypatch):
    from rerankers.train import loop
    from rerankers.train.config import resolve_config

    real = loop._optimizer_step
    strict = _strict(real)
    steps = []

    def checked(state, step):
        steps.append(step)
        return real(state, step) if step == 0 else strict(state, step)  # the first step compiles the kernels

    monkeypatch.setattr(loop, "_optimizer_step", checked)
    model_dir = tiny_bert_dir if kind == "bert" else tiny_mamba_dir
    cfg = resolve_config(None, dict(backbone=str(model_dir), out=str(tmp_path / "run"), train=[sample_training["run"]],
                                    train_qrels=[sample_training["qrels"]], corpus=sample_training["corpus"],
                                    queries=sample_training["queries"], group_size=4, queries_per_step=4, lr=1e-3,
                                    warmup_steps=2, max_steps=6, log_every=3, max_length=128, seed=1, device="cuda"))
    result = loop.train(cfg)
    assert steps == list(range(6)) and len(result.history) == 2
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)


@pytest.mark.parametrize("kind", ["bert", "mamba"])
def test_the_bench_step_never_waits_for_the_gpu(kind, tiny_bert_dir, tiny_mamba_dir):
    from rerankers.bench.build import build_model
    from rerankers.bench.systems import Ours, TrainStep
    from rerankers.bench.workload import model_workload, synthetic_batches

    model, _ = build_model(str(tiny_bert_dir if kind == "bert" else tiny_mamba_dir), seed=0)
    model = copy.deepcopy(model).cuda()
    batches = [b.to("cuda") for b in synthetic_batches(16, 2, seed=3, **model_workload(model))]
    step = TrainStep(Ours(kind, "packed", model), torch.device("cuda"), 8, autocast=torch.bfloat16)
    step(batches[0])
    before = [p.detach().clone() for p in model.parameters()]
    losses = [_strict(step)(batches[i % 2]) for i in range(3)]
    assert all(bool(torch.isfinite(loss)) for loss in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))

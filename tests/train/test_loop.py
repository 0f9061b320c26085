"""The training loop on tiny random models: the loss falls, outputs are complete and loadable, resume
after SIGKILL is bitwise exact, two gloo processes equal one, bad input stops cleanly with nothing lost."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rerankers.errors import NonFiniteLossError, ResumeMismatchError, TrainingDataError, UsageError
from rerankers.train.config import resolve_config
from rerankers.train.loop import train

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _settings(model_dir: Path, data: dict, out: Path, **kw) -> dict:
    base = dict(backbone=str(model_dir), out=str(out), train=[data["run"]], train_qrels=[data["qrels"]],
                corpus=data["corpus"], queries=data["queries"], group_size=4, queries_per_step=4, lr=3e-3,
                warmup_steps=5, max_steps=60, log_every=5, max_length=128, seed=1)
    base.update(kw)
    return base


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.rglob("*.safetensors"))
    assert files, f"no weights in {folder}"
    return {f"{f.relative_to(folder)}:{k}": v for f in files for k, v in load_file(f).items()}


def _cli(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rerankers.cli", "-q", "train", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _flags(settings: dict) -> list[str]:
    out = []
    for k, v in settings.items():
        out.append("--" + k.replace("_", "-"))
        out.extend(map(str, v) if isinstance(v, list) else [str(v)])
    return out


@pytest.mark.parametrize("kind", ["bert", "mamba"])
def test_loss_falls_and_the_outputs_are_complete(kind, tiny_bert_dir, tiny_mamba_dir, sample_training, tmp_path):
    model_dir = tiny_bert_dir if kind == "bert" else tiny_mamba_dir
    cfg = resolve_config(None, _settings(model_dir, sample_training, tmp_path / "run",
                                         eval_candidates=sample_training["candidates"],
                                         eval_qrels=sample_training["qrels"], eval_every=30))
    result = train(cfg)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2, losses
    out = tmp_path / "run"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(5, 61, 5))
    assert [r["step"] for r in log if "dev" in r] == [30, 60]
    assert all(r["tokens_per_s"] > 0 and r["pairs_per_s"] > 0 and r["peak_memory_gib"] > 0 for r in log if "loss" in r)
    report = json.loads((out / "train_report.json").read_text())
    assert report["quality"]["final_dev"]["nDCG@10"] == result.report["quality"]["final_dev"]["nDCG@10"]
    assert report["throughput"]["tokens_per_s"] > 0 and report["throughput"]["card"].startswith("CPU")
    assert report["data"]["training_queries"] == 40 and report["settings"]["backbone"] == str(model_dir)
    best = report["quality"]["best"]
    assert best["value"] == max(r["dev"]["nDCG@10"] for r in report["quality"]["dev_history"])
    # the final and the best model are CrossEncoder folders that rerank
    from rerankers.models.cross_encoder import CrossEncoder
    from rerankers.reranker import Reranker
    for folder in (out / "model", out / "best"):
        model = CrossEncoder.from_pretrained(folder)
        assert model.head_trained
        scores = Reranker(model, device="cpu").score("what is the capital of turkey",
                                                     ["ankara is the capital", "a cat"])
        assert len(scores) == 2
    assert (out / "train_config.json").is_file() and not list(out.glob(".*partial"))


def test_loss_falls_on_msmarco_toy_triples(shared_data, tiny_bert_for, tmp_path):
    triples = shared_data / "msmarco-toy" / "triplets" / "raw.tsv"
    model_dir = tiny_bert_for(tmp_path / "bert", triples.read_text(encoding="utf-8").replace("\t", "\n").splitlines())
    cfg = resolve_config(None, dict(backbone=str(model_dir), out=str(tmp_path / "toy"), train=[str(triples)],
                                    group_size=2, queries_per_step=8, lr=3e-3, warmup_steps=5, max_steps=40,
                                    log_every=5, max_length=128, seed=0))
    result = train(cfg)
    losses = [h["loss"] for h in result.history]
    assert result.report["data"]["training_queries"] > 50
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2, losses


def test_resume_after_sigkill_ends_bitwise_where_an_uninterrupted_run_ends(tiny_mamba_dir, sample_training,
                                                                           tmp_path):
    settings = _settings(tiny_mamba_dir, sample_training, tmp_path / "whole", max_steps=24, save_every=4,
                         log_every=2)
    whole = _cli(*_flags(settings))
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    killed_out = tmp_path / "killed"
    proc = _cli(*_flags({**settings, "out": str(killed_out)}))
    deadline = time.time() + 240
    while not (killed_out / "checkpoint-8").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed: make it longer"
    assert not (killed_out / "model").exists()
    resumed = _cli("--resume", str(killed_out))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    a, b = _weights(tmp_path / "whole" / "model"), _weights(killed_out / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_a = (tmp_path / "whole" / "train_log.jsonl").read_text().splitlines()
    log_b = (killed_out / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in log_a] == [json.loads(x)["loss"] for x in log_b]
    report = json.loads((killed_out / "train_report.json").read_text())
    assert report["data"]["resumed_from_step"] >= 8


def test_two_gloo_processes_equal_one_process(tiny_bert_for, sample_training, tmp_path):
    # no dropout: each process draws its own masks, so only a deterministic model can agree exactly
    model_dir = tiny_bert_for(tmp_path / "bert", dropout=0.0)
    settings = _settings(model_dir, sample_training, tmp_path / "one", max_steps=6, queries_per_step=6,
                         micro_batch_tokens=400, lr=3e-4)
    one = _cli(*_flags(settings))
    assert one.wait(timeout=300) == 0, one.stderr.read()
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "rerankers.cli", "-q", "train", *_flags({**settings, "out": str(tmp_path / "two")})],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _weights(tmp_path / "one" / "model"), _weights(tmp_path / "two" / "model")
    for k in a:
        if k == "head.safetensors:out_proj.bias":
            # LCE is invariant to a shift of all scores: this bias's gradient is 0 up to rounding, and
            # AdamW turns rounding noise into steps of size lr. It must only stay near its start.
            assert float((b[k] - a[k]).abs().max()) <= 2 * 3e-4 * 6
            continue
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    la = [json.loads(x)["loss"] for x in (tmp_path / "one" / "train_log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert la == pytest.approx(lb, rel=1e-5)
    report = json.loads((tmp_path / "two" / "train_report.json").read_text())
    assert report["throughput"]["processes"] == 2


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(tiny_bert_dir, sample_training, tmp_path):
    cfg = resolve_config(None, _settings(tiny_bert_dir, sample_training, tmp_path / "nan", lr=1e30, warmup_steps=0,
                                         max_grad_norm=None, save_every=1, max_steps=20))
    with pytest.raises(NonFiniteLossError, match=r"step (\d+) .*queries .*last checkpoint .* is intact"):
        train(cfg)
    checkpoints = sorted((tmp_path / "nan").glob("checkpoint-*"))
    assert checkpoints and not (tmp_path / "nan" / "model").exists()
    from rerankers.models.cross_encoder import CrossEncoder
    CrossEncoder.from_pretrained(checkpoints[0])  # loads: nothing half-written


def _fused_adamw(monkeypatch, deferred: bool) -> None:
    """The loop's optimizer fused on the CPU (as on CUDA), its non-finite check on the device (``deferred``: the
    CUDA path, numbers read one step late) or on the host before the update."""
    import functools

    from rerankers.train import guard, loop, optim
    monkeypatch.setattr(loop, "build_optimizer", functools.partial(_build_fused, optim.build_optimizer))
    monkeypatch.setattr(guard, "defers", lambda optimizer: deferred)


def _build_fused(build, model, lr, weight_decay, device, head_lr=None):
    groups = [{k: g[k] for k in ("params", "lr", "weight_decay")} for g in build(model, lr, weight_decay, device,
                                                                                  head_lr).param_groups]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)


def test_the_device_side_check_trains_and_stops_exactly_as_the_host_check(tiny_bert_dir, sample_training, tmp_path,
                                                                         monkeypatch):
    """The CUDA path (the update of a non-finite step skipped by the fused AdamW, its numbers read once the next
    step is queued) against the host check before the update, with the same fused optimizer: the same weights,
    log and checkpoints for a finite run; for a diverging one the same step named, and the same checkpoints."""
    runs = {}
    for deferred in (True, False):
        _fused_adamw(monkeypatch, deferred)
        out = tmp_path / f"finite-{deferred}"
        train(resolve_config(None, _settings(tiny_bert_dir, sample_training, out, max_steps=8, log_every=3,
                                             save_every=5)))
        runs[deferred] = out
        out = tmp_path / f"nan-{deferred}"
        with pytest.raises(NonFiniteLossError, match=r"step (\d+) .*queries .*last checkpoint .* is intact") as e:
            train(resolve_config(None, _settings(tiny_bert_dir, sample_training, out, lr=1e30, warmup_steps=0,
                                                 max_grad_norm=None, save_every=1, max_steps=20)))
        runs[f"nan-{deferred}"] = (out, str(e.value).split(":")[0])
    a, b = _weights(runs[True] / "model"), _weights(runs[False] / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = {d: [json.loads(x) for x in (runs[d] / "train_log.jsonl").read_text().splitlines()] for d in (True, False)}
    assert [r["loss"] for r in log[True]] == [r["loss"] for r in log[False]] and len(log[True]) == 3
    assert sorted(p.name for p in runs[True].glob("checkpoint-*")) == ["checkpoint-5"]
    (nan_a, step_a), (nan_b, step_b) = runs["nan-True"], runs["nan-False"]
    assert step_a == step_b, (step_a, step_b)
    kept = sorted(p.name for p in nan_a.glob("checkpoint-*"))
    assert kept and kept == sorted(p.name for p in nan_b.glob("checkpoint-*")) and not (nan_a / "model").exists()
    assert int(kept[-1].split("-")[1]) < int(step_a.split()[1])  # no checkpoint of the non-finite step or after
    c, d = _weights(nan_a / kept[-1]), _weights(nan_b / kept[-1])
    assert all(torch.isfinite(v).all() and torch.equal(v, d[k]) for k, v in c.items() if v.is_floating_point())


def test_a_step_gone_non_finite_while_the_next_is_queued_stops_there(tiny_bert_dir, sample_training, tmp_path,
                                                                      monkeypatch):
    """Step 5 of 8 gives a NaN loss (saved every 4, logged every 3): read only once step 6 is queued on the device
    path. Either way (device-side or host check) the error names step 5, checkpoint-4 is the last one, the log ends
    at step 3, and the checkpoint equals the one of a run that never went wrong."""
    from rerankers.train import loop

    _fused_adamw(monkeypatch, True)
    settings = dict(max_steps=8, log_every=3, save_every=4)
    train(resolve_config(None, _settings(tiny_bert_dir, sample_training, tmp_path / "clean", **settings)))
    real, calls = loop._forward_loss, []

    def poisoned(forward, loss_fn, mb, *args):
        calls.append(1)
        loss = real(forward, loss_fn, mb, *args)
        return loss * float("nan") if len(calls) == 5 else loss  # one micro-batch a step here: step 5

    monkeypatch.setattr(loop, "_forward_loss", poisoned)
    for deferred in (True, False):
        _fused_adamw(monkeypatch, deferred)
        calls.clear()
        out = tmp_path / f"poisoned-{deferred}"
        with pytest.raises(NonFiniteLossError, match=r"^step 5 \(epoch 1\): the loss is nan"):
            train(resolve_config(None, _settings(tiny_bert_dir, sample_training, out, **settings)))
        assert len(calls) == (6 if deferred else 5)  # the device path had queued step 6
        assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"] and not (out / "model").exists()
        assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] == [3]
        a, b = _weights(out / "checkpoint-4"), _weights(tmp_path / "clean" / "checkpoint-4")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_loop_checks_labels_on_the_host_before_copying_them(tiny_bert_dir, sample_training, tmp_path,
                                                                monkeypatch):
    """On CUDA the loss's forward skips its value checks (they would read the device), so the loop runs them on
    the micro-batch's host tensors itself: once before the forward (and, on the CPU, the forward again)."""
    from rerankers.train import loop
    from rerankers.train.losses.base import RankingLoss

    seen = []
    real = RankingLoss.check_inputs

    def spy(self, labels, teacher=None):
        seen.append(labels.device.type)
        return real(self, labels, teacher)

    monkeypatch.setattr(RankingLoss, "check_inputs", spy)
    real_forward_loss = loop._forward_loss
    per_call = []

    def counted(*args):
        before = len(seen)
        out = real_forward_loss(*args)
        per_call.append(len(seen) - before)
        return out

    monkeypatch.setattr(loop, "_forward_loss", counted)
    train(resolve_config(None, _settings(tiny_bert_dir, sample_training, tmp_path / "r", max_steps=2, log_every=1)))
    assert per_call and all(n == 2 for n in per_call) and set(seen) == {"cpu"}


def test_bad_input_is_one_clear_error(tiny_bert_dir, tiny_mamba_dir, sample_training, tmp_path):
    with pytest.raises(TrainingDataError, match="group of 40"):
        train(resolve_config(None, _settings(tiny_bert_dir, sample_training, tmp_path / "a", group_size=40)))
    no_pos = tmp_path / "nopos.jsonl"
    no_pos.write_text(json.dumps({"query": "a query", "negatives": ["x", "y"]}) + "\n")
    with pytest.raises(TrainingDataError):
        train(resolve_config(None, _settings(tiny_bert_dir, sample_training, tmp_path / "b", train=[str(no_pos)],
                                             train_qrels=[])))
    done = tmp_path / "done"
    train(resolve_config(None, _settings(tiny_bert_dir, sample_training, done, max_steps=2)))
    with pytest.raises(UsageError, match="holds an earlier run"):
        train(resolve_config(None, _settings(tiny_bert_dir, sample_training, done, max_steps=2)))
    from rerankers.train.run import resolve_training_config
    with pytest.raises(ResumeMismatchError, match="backbone"):
        resolve_training_config(resume=str(done), overrides={"backbone": str(tiny_mamba_dir)})
    with pytest.raises(UsageError, match="no train_config.json"):
        resolve_training_config(resume=str(tmp_path / "nothing"), overrides={})


def test_cli_dry_run_prints_the_plan_and_trains_nothing(tiny_bert_dir, sample_training, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"backbone: {tiny_bert_dir}\ntrain: {sample_training['run']}\ntrain-qrels: "
                      f"{sample_training['qrels']}\ncorpus: {sample_training['corpus']}\nqueries: "
                      f"{sample_training['queries']}\ngroup_size: 4\nlr: 1e-4\n")
    proc = _cli("--config", str(config), "--out", str(tmp_path / "plan"), "--dry-run")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "40 usable queries" in out and "5 (5/epoch) of 8 groups x 4 documents" in out
    assert not (tmp_path / "plan").exists()
    config.write_text(config.read_text() + "learning_rate: 3\n")
    proc = _cli("--config", str(config), "--out", str(tmp_path / "plan"), "--dry-run")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "unknown key(s) 'learning_rate'" in err and "run.yaml" in err


@pytest.mark.parametrize("kind", ["bert", "mamba"])
def test_lora_trains_adapters_and_head_and_reloads_with_the_same_scores(kind, tiny_bert_dir, tiny_mamba_dir,
                                                                       sample_training, tmp_path):
    pytest.importorskip("peft")
    from rerankers.models.cross_encoder import CrossEncoder
    from rerankers.reranker import Reranker
    from rerankers.train.loop import build_model

    model_dir = tiny_bert_dir if kind == "bert" else tiny_mamba_dir
    settings = _settings(model_dir, sample_training, tmp_path / "lora", lora=4, max_steps=8, save_every=4)
    cfg = resolve_config(None, settings)
    frozen = build_model(resolve_config(None, {**settings, "lora": None}))
    result = train(cfg)
    trainable = result.report["model"]["trainable_parameters"]
    assert 0 < trainable < 0.5 * result.report["model"]["parameters"]
    out = tmp_path / "lora"
    saved = CrossEncoder.from_pretrained(out / "model")  # a plain folder: the adapters merged in
    assert saved.head_trained and (out / "model" / "lora_state.safetensors").is_file()
    # the head was trained; the frozen base changed only through the merged low-rank update
    head_before = dict(frozen.head.named_parameters())
    assert any(not torch.equal(p, head_before[n]) for n, p in saved.head.named_parameters())
    # the in-memory LoRA model of a resumed build scores exactly as the merged folder
    live = build_model(cfg)
    from rerankers.train.lora import load_lora_state
    load_lora_state(live, out / "model")
    docs = ["ankara is the capital of turkey", "the northern lights are caused by the sun", "a cat"]
    a = Reranker(live, device="cpu").score("what is the capital of turkey", docs)
    b = Reranker(saved, device="cpu").score("what is the capital of turkey", docs)
    assert a == pytest.approx(b, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("quiet", [False, True])
def test_the_training_bar_shows_on_a_terminal_unless_quiet(quiet, tiny_bert_dir, sample_training, tmp_path,
                                                           terminal_stderr):
    """rerank -q sets the package logger to ERROR: the training loop's bar follows it like every other bar."""
    import logging
    logging.getLogger("rerankers").setLevel(logging.ERROR if quiet else logging.INFO)
    terminal = terminal_stderr()
    train(resolve_config(None, _settings(tiny_bert_dir, sample_training, tmp_path / "run", max_steps=3)))
    assert ("train:" in terminal.text) != quiet, terminal.text


@pytest.mark.parametrize("kind", ["bert", "mamba"])
def test_qlora_run_saves_a_plain_fp32_model_that_scores_as_the_nf4_one(kind, tiny_bert_dir, tiny_mamba_dir,
                                                                       sample_training, tmp_path):
    """--lora 4 --qlora: the LoRA targets train over a 4-bit NF4 base; the saved folder is a plain CrossEncoder
    (dequantised base + adapters, no bitsandbytes layer in it) scoring as the in-memory QLoRA model; a
    resumed build holds the same NF4 base; --qlora without --lora is an error naming the flag."""
    bnb = pytest.importorskip("bitsandbytes")
    pytest.importorskip("peft")
    from rerankers.errors import TrainingConfigError
    from rerankers.models.cross_encoder import CrossEncoder
    from rerankers.reranker import Reranker
    from rerankers.train.loop import build_model
    from rerankers.train.lora import load_lora_state

    model_dir = tiny_bert_dir if kind == "bert" else tiny_mamba_dir
    settings = _settings(model_dir, sample_training, tmp_path / "qlora", lora=4, qlora=True, max_steps=4)
    cfg = resolve_config(None, settings)
    result = train(cfg)
    saved = CrossEncoder.from_pretrained(result.model_dir)
    assert saved.head_trained and not any(isinstance(m, bnb.nn.Linear4bit) for m in saved.modules())
    live = build_model(cfg)
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in live.modules()) > 0 and live.lora["base"] == "nf4"
    load_lora_state(live, result.model_dir)
    docs = ["ankara is the capital of turkey", "the northern lights are caused by the sun", "a cat"]
    a = Reranker(live, device="cpu").score("what is the capital of turkey", docs)
    b = Reranker(saved, device="cpu").score("what is the capital of turkey", docs)
    assert a == pytest.approx(b, rel=1e-4, abs=1e-4)
    # NF4 changed the base: the saved (dequantised) base weights are not the plain LoRA model's fp32 ones (the
    # tiny BERT's scores are nearly constant, ~1e-4 apart, so they cannot show it reliably: the weights do)
    plain = build_model(resolve_config(None, {**settings, "qlora": False}))
    load_lora_state(plain, result.model_dir)
    from rerankers.train.lora import merged_copy

    ours, theirs = saved.state_dict(), merged_copy(plain).state_dict()  # both plain: base (+ merged adapters)
    assert ours.keys() == theirs.keys()
    changed = [k for k, v in ours.items() if k in theirs and v.dim() == 2 and v.shape == theirs[k].shape
               and float((v.float() - theirs[k].float()).norm() / theirs[k].float().norm()) > 1e-3]
    assert changed, "the NF4 base equals the fp32 one"
    with pytest.raises(TrainingConfigError, match="--qlora: QLoRA is LoRA over a 4-bit base"):
        resolve_config(None, {**settings, "lora": None})


def test_recompute_mixer_trains_bitwise_as_without_and_is_mamba_only(tiny_bert_dir, tiny_mamba_dir, sample_training,
                                                                      tmp_path, caplog, monkeypatch):
    """--recompute-mixer rebuilds the same activations from the same kernels: the same losses and final weights,
    bit for bit (CPU). The default, auto, leaves it off on the CPU (what it saves is GPU memory); on CUDA it turns
    it on for Mamba-1 from mamba-370m's width up and leaves a backbone without such mixers as it is. Asked for (on)
    there, it says so, naming the flag; auto then rebuilds micro-batch by micro-batch, the large ones only."""
    import logging

    from rerankers.errors import TrainingConfigError
    from rerankers.models import mamba
    from rerankers.models.cross_encoder import CrossEncoder
    from rerankers.train.loop import _enable_recompute_mixer, _recompute_for
    runs = {}
    for on in ("off", "auto", True):
        out = tmp_path / f"rec-{on}"
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="rerankers"):
            result = train(resolve_config(None, _settings(tiny_mamba_dir, sample_training, out, max_steps=6,
                                                          log_every=1, recompute_mixer=on)))
        assert ("rebuilt in the backward" in caplog.text) == (on is True), on
        runs[on] = ([h["loss"] for h in result.history], _weights(out / "model"))
    for on in ("auto", True):
        assert runs[on][0] == runs["off"][0]
        a, b = runs["off"][1], runs[on][1]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # auto's rule, as it decides for a CUDA run (it only sets flags: no GPU needed), the width lowered to the tiny one's
    cuda = torch.device("cuda")
    auto = resolve_config(None, _settings(tiny_mamba_dir, sample_training, tmp_path / "x", recompute_mixer="auto"))
    tiny = CrossEncoder.from_pretrained(tiny_mamba_dir)
    assert not _enable_recompute_mixer(tiny, auto, cuda)
    assert not tiny.backbone.recompute_mixer  # narrower than mamba-370m
    monkeypatch.setattr(mamba, "RECOMPUTE_AUTO_MIN_HIDDEN", 1)
    assert _enable_recompute_mixer(tiny, auto, cuda)  # then decided micro-batch by micro-batch
    assert not tiny.backbone.recompute_mixer
    bert = CrossEncoder.from_pretrained(tiny_bert_dir)
    assert not _enable_recompute_mixer(bert, auto, cuda)  # no Mamba-1 mixers: left as it is, no error
    with pytest.raises(TrainingConfigError, match="--recompute-mixer: the .* backbone has no mixer"):
        _enable_recompute_mixer(bert, resolve_config(None, _settings(tiny_bert_dir, sample_training, tmp_path / "y",
                                                                     recompute_mixer="on")), cuda)
    # auto's rule with its real threshold: a micro-batch the default budget fills rebuilds, a 64-pair step does not
    assert mamba.RECOMPUTE_AUTO_MIN_TOKENS <= auto.micro_batch_tokens // 2
    for tokens, on in ((auto.micro_batch_tokens, True), (auto.micro_batch_tokens // 2, True), (5819, False)):
        _recompute_for(tiny, tokens)
        assert tiny.backbone.recompute_mixer is on, tokens
    # auto's per-micro-batch rule through the loop (as on CUDA): the larger micro-batches rebuild, the smaller keep,
    # and the run is still bitwise the one without
    monkeypatch.setattr(mamba, "recompute_by_default", lambda backbone, device: True)
    monkeypatch.setattr(mamba, "RECOMPUTE_AUTO_MIN_TOKENS", 580)  # its micro-batches: 549-593 tokens
    flags, real_set = [], mamba.set_recompute_mixer
    monkeypatch.setattr(mamba, "set_recompute_mixer", lambda backbone, on: (flags.append(on), real_set(backbone, on)))
    mixed = {}
    for on in ("off", "auto"):
        out = tmp_path / f"rec-mixed-{on}"
        result = train(resolve_config(None, _settings(tiny_mamba_dir, sample_training, out, max_steps=6, log_every=1,
                                                      micro_batch_tokens=600, recompute_mixer=on)))
        mixed[on] = ([h["loss"] for h in result.history], _weights(out / "model"))
    assert flags[0] is False and True in flags[1:] and False in flags[1:], flags
    assert mixed["auto"][0] == mixed["off"][0]
    a, b = mixed["off"][1], mixed["auto"][1]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    monkeypatch.undo()
    with pytest.raises(TrainingConfigError, match="--recompute-mixer: the .* backbone has no mixer"):
        train(resolve_config(None, _settings(tiny_bert_dir, sample_training, tmp_path / "bert", max_steps=2,
                                             recompute_mixer="on")))
    pytest.importorskip("peft")
    lora = {on: [h["loss"] for h in train(resolve_config(None, _settings(
        tiny_mamba_dir, sample_training, tmp_path / f"lora-{on}", max_steps=3, log_every=1, lora=4,
        recompute_mixer=on))).history] for on in ("off", "on")}
    assert lora["on"] == lora["off"]  # through peft's wrapper too

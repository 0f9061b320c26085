"""Fixed-shape training steps (--static-tokens) and the compiled training forward (--compile).

A batch padded to a StaticShape gives its real pairs the plain packed batch's scores bit for bit (fp32, CPU)
and the same gradients; every micro-batch of a run has one shape whatever its groups; the loss never sees
the padding; the settings are validated like the others.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import pytest
import torch

from rerankers.bench.workload import random_batch
from rerankers.data.packing import PAD_PIECE_TOKENS, StaticShape, pad_to_static
from rerankers.errors import TrainingConfigError
from rerankers.models.cross_encoder import CrossEncoder
from rerankers.train.batches import micro_batches, static_shape_for
from rerankers.train.config import config_from_dict, resolve_config
from rerankers.train.sampler import GroupSampler

LENGTHS = [7, 31, 5, 12, 1, 20, 9, 14]  # one group of 8 pairs, as training packs them


def _model(folder: Path, pooling: str | None = None) -> CrossEncoder:
    torch.manual_seed(0)
    model = CrossEncoder.from_backbone(folder, init="random", seed=0)
    if pooling is not None:
        model.set_pooling(pooling)
    return model.eval()  # no dropout: the same function on both batches


def _batch(model: CrossEncoder, lengths=LENGTHS, seed: int = 0):
    vocab = model.backbone.get_input_embeddings().weight.shape[0]
    return random_batch(lengths, vocab, torch.Generator().manual_seed(seed), token_types=model.backbone_type == "bert")


def _settings(model_dir: Path, data: dict, out: Path, **kw) -> dict:
    base = dict(backbone=str(model_dir), out=str(out), train=[data["run"]], train_qrels=[data["qrels"]],
                corpus=data["corpus"], queries=data["queries"], group_size=4, queries_per_step=4, lr=3e-3,
                warmup_steps=1, max_steps=2, log_every=1, max_length=64, max_query_tokens=16, seed=1)
    base.update(kw)
    return base


# ------------------------------------------------------------------------------------------- packing
def test_pad_to_static_layout():
    """Real sequences first and unchanged, then empty slots, then padding pieces of pad ids (each at most the
    piece length, positions from 0, token type 0); every slot's first / last token index lies in the batch."""
    batch = random_batch(LENGTHS, 50, torch.Generator().manual_seed(1), token_types=True)
    shape = StaticShape.for_budget(400, 8, max_seqlen=64, pad_id=3)
    assert shape.piece_tokens == 64 and shape.sequences == 8 + math.ceil(399 / 64)
    static = pad_to_static(batch, shape)
    T, S = batch.num_tokens, batch.num_sequences
    assert static.input_ids.shape == static.position_ids.shape == static.token_type_ids.shape == (400,)
    assert static.cu_seqlens.shape == (shape.sequences + 1,) and static.cu_seqlens.dtype == torch.int32
    assert static.max_seqlen == 64 and static.real_sequences == S and static.real_tokens == T
    assert static.num_real_sequences == S and static.num_real_tokens == T
    assert torch.equal(static.cu_seqlens[:S + 1], batch.cu_seqlens)
    for name in ("input_ids", "position_ids", "token_type_ids"):
        assert torch.equal(getattr(static, name)[:T], getattr(batch, name)), name
    assert (static.input_ids[T:] == 3).all() and (static.token_type_ids[T:] == 0).all()
    lens = static.seqlens[S:].tolist()
    empties = [n for n in lens if n == 0]
    pieces = lens[len(empties):]
    assert empties and all(lens[i] == 0 for i in range(len(empties)))  # the empty slots come first
    assert all(1 <= n <= 64 for n in pieces) and sum(pieces) == 400 - T
    assert int(static.position_ids[T:].max()) < 64
    assert 0 <= int(static.first_token_index.max()) < 400 and 0 <= int(static.last_token_index.min())
    # a plain batch is its own real part
    assert batch.num_real_sequences == S and batch.num_real_tokens == T


def test_pad_to_static_refuses_what_does_not_fit():
    batch = random_batch(LENGTHS, 50, torch.Generator().manual_seed(1))
    T = batch.num_tokens
    with pytest.raises(ValueError, match="padding token"):
        pad_to_static(batch, StaticShape(T, 20, 64))  # no room for a padding token
    with pytest.raises(ValueError, match="slots"):
        pad_to_static(batch, StaticShape(T + 200, len(LENGTHS) + 1, 64))  # 200 padding tokens need 4 pieces
    with pytest.raises(ValueError, match="exceeds max_seqlen"):
        pad_to_static(batch, StaticShape(T + 1, 20, 16))  # a 31-token sequence over a bound of 16
    with pytest.raises(ValueError, match="padded already"):
        pad_to_static(pad_to_static(batch, StaticShape(T + 5, 20, 64)), StaticShape(T + 10, 30, 64))
    # for_budget's slots hold the worst case: one real token, all the rest padding
    shape = StaticShape.for_budget(1000, 4, 256)
    assert shape.fits(1, 1) and shape.fits(999, 4) and not shape.fits(1000, 1)
    assert shape.piece_tokens == PAD_PIECE_TOKENS


@pytest.mark.parametrize("kind", ["bert", "mamba"])
def test_static_hidden_states_bitwise_for_any_pair_count(kind, tiny_bert_dir, tiny_mamba_dir):
    """The backbone's states of the real tokens do not depend on the padding, bit for bit, for any layout
    (6 pairs here: the head's BLAS call, (S, H) x (H, 1), may round a row differently with another row count
    S where S is no multiple of 4 on this CPU's MKL; a group of 8 pairs, below, is)."""
    model = _model(tiny_bert_dir if kind == "bert" else tiny_mamba_dir)
    batch = _batch(model, LENGTHS[:6])
    static = pad_to_static(batch, StaticShape.for_budget(batch.num_tokens + 150, 8, int(model.template.max_length),
                                                         model.tokenizer.pad_token_id))
    with torch.no_grad():
        plain, padded = model.backbone(batch), model.backbone(static)
    assert padded.shape[0] == static.num_tokens and torch.isfinite(padded).all()
    assert torch.equal(padded[:batch.num_tokens], plain)


@pytest.mark.parametrize("kind,pooling,groups", [("bert", None, 1), ("mamba", None, 1), ("bert", "mean", 1),
                                                 ("mamba", None, 2)])
def test_static_scores_bitwise_and_gradients_equal(kind, pooling, groups, tiny_bert_dir, tiny_mamba_dir):
    """The real pairs' scores of the padded batch == the plain packed batch's, bit for bit (fp32, CPU, groups
    of 8 pairs); the gradient of a loss over them is the same, and finite (the padding and the empty slots
    poison nothing, mean pooling of an empty slot included)."""
    model = _model(tiny_bert_dir if kind == "bert" else tiny_mamba_dir, pooling)
    batch = _batch(model, LENGTHS * groups)
    pad_id = model.tokenizer.pad_token_id
    shape = StaticShape.for_budget(batch.num_tokens + 150, 8 * groups, int(model.template.max_length), pad_id)
    static = pad_to_static(batch, shape)
    weights = torch.linspace(-1, 1, batch.num_sequences)

    def run(b):
        model.zero_grad(set_to_none=True)
        scores = model(b)
        ((scores[:batch.num_sequences] * weights).sum()).backward()
        return scores.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, g_plain = run(batch)
    padded, g_static = run(static)
    assert padded.shape == (shape.sequences,) and torch.isfinite(padded).all()
    assert torch.equal(padded[:batch.num_sequences], plain)
    assert g_plain.keys() == g_static.keys() and g_plain
    for name, g in g_plain.items():
        assert torch.isfinite(g_static[name]).all(), name
        torch.testing.assert_close(g_static[name], g, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("kind", ["mamba2", "opt"])
def test_static_scores_and_gradients_of_the_other_packed_kinds(kind, tiny_checkpoints, tmp_path):
    """Mamba-2 (the chunked SSD) and a decoder Transformer (causal varlen attention): the same as packed."""
    from rerankers.bench.build import build_model

    model = build_model(str(tiny_checkpoints.BUILDERS[kind](tmp_path / kind)))[0].eval()
    batch = _batch(model)
    static = pad_to_static(batch, StaticShape.for_budget(batch.num_tokens + 100, 8, int(model.template.max_length)))
    grads = []
    for b in (batch, static):
        model.zero_grad(set_to_none=True)
        scores = model(b)
        scores[:batch.num_sequences].sum().backward()
        grads.append((scores.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (plain, g_plain), (padded, g_static) = grads
    assert torch.equal(padded[:batch.num_sequences], plain) and torch.isfinite(padded).all()
    for name, g in g_plain.items():
        torch.testing.assert_close(g_static[name], g, rtol=1e-5, atol=1e-7, msg=name)


# -------------------------------------------------------------------------------------- micro-batches
def _groups(model_dir: Path, data: dict, out: Path, steps: int = 3, **kw):
    from rerankers.train.loop import load_data

    cfg = resolve_config(None, _settings(model_dir, data, out, **kw))
    queries = load_data(cfg, needs_teacher=False)
    sampler = GroupSampler(queries, cfg.group_size, cfg.queries_per_step, cfg.seed)
    return cfg, [sampler.step(i)[1] for i in range(steps)]


def test_every_micro_batch_has_one_shape(tiny_mamba_dir, sample_training, tmp_path):
    """Groups of different lengths, split into different numbers of micro-batches of different group counts:
    one shape for all; the real part is the plain micro-batch."""
    cfg, steps = _groups(tiny_mamba_dir, sample_training, tmp_path / "r", static_tokens=800)
    from rerankers.train.loop import build_model

    model = build_model(cfg).eval()  # the run's template: max_length 64
    shape = static_shape_for(model, 800, cfg.queries_per_step * cfg.group_size)
    mbs = [mb for groups in steps for mb in micro_batches(model, groups, 0, shape)]
    assert len({mb.num_groups for mb in mbs}) > 1 and len({mb.real_tokens for mb in mbs}) > 1
    for mb in mbs:
        b = mb.batch
        assert (b.input_ids.shape, b.position_ids.shape, b.cu_seqlens.shape, b.max_seqlen) == \
            ((800,), (800,), (shape.sequences + 1,), 64)
        assert b.real_sequences == mb.num_pairs and mb.real_tokens < 800
    plain = [mb for groups in steps for mb in micro_batches(model, groups, 799)]
    assert [mb.num_pairs for mb in plain] == [mb.num_pairs for mb in mbs]
    for p, s in zip(plain, mbs):
        assert torch.equal(s.batch.input_ids[:p.real_tokens], p.batch.input_ids)
        assert torch.equal(s.batch.cu_seqlens[:p.num_pairs + 1], p.batch.cu_seqlens)


def test_a_group_that_cannot_fit_names_the_setting(tiny_bert_dir, sample_training, tmp_path):
    cfg, steps = _groups(tiny_bert_dir, sample_training, tmp_path / "r", steps=1)
    model = _model(tiny_bert_dir)
    shape = static_shape_for(model, 40, 16)
    with pytest.raises(TrainingConfigError, match=r"^--static-tokens 40: the group of query \S+ holds \d+ tokens") as e:
        micro_batches(model, steps[0], 0, shape)
    assert "\n" not in str(e.value) and "raise --static-tokens to at least" in str(e.value)


def test_static_shapes_only_for_tested_kinds(tiny_bert_dir):
    model = _model(tiny_bert_dir)
    model.backbone_type = "lstm"  # as the registry would have it: a kind without the tested static path
    with pytest.raises(TrainingConfigError, match="^--static-tokens: fixed-shape packing is supported for the "
                                                  "bert, mamba, mamba2, decoder backbones, not lstm$"):
        static_shape_for(model, 512, 8)


def test_the_loss_ignores_the_padding(tiny_bert_dir, sample_training, tmp_path):
    """The loss of a static micro-batch == the plain one's, whatever token the padding holds."""
    from rerankers.train.loop import _forward_loss
    from rerankers.train.losses import build_loss

    cfg, steps = _groups(tiny_bert_dir, sample_training, tmp_path / "r", steps=1)
    model = _model(tiny_bert_dir)
    loss_fn = build_loss("lce")
    (plain,) = micro_batches(model, steps[0], 10_000)
    losses = []
    for pad_id in (model.tokenizer.pad_token_id, 7):
        shape = StaticShape.for_budget(plain.real_tokens + 100, 16, int(model.template.max_length), pad_id)
        (static,) = micro_batches(model, steps[0], 0, shape)
        losses.append(_forward_loss(model, loss_fn, static, torch.device("cpu"), None, cfg.group_size))
    want = _forward_loss(model, loss_fn, plain, torch.device("cpu"), None, cfg.group_size)
    assert torch.equal(losses[0], want) and torch.equal(losses[1], want)


def test_training_with_static_tokens_matches_the_plain_run(tiny_bert_for, sample_training, tmp_path):
    """Two steps without dropout: the same losses as the plain packed run; the log counts real tokens only."""
    from rerankers.train.loop import train
    from rerankers.train.run import plan_training

    model_dir = tiny_bert_for(tmp_path / "bert", dropout=0.0)
    plain = train(resolve_config(None, _settings(model_dir, sample_training, tmp_path / "plain")))
    cfg = resolve_config(None, _settings(model_dir, sample_training, tmp_path / "static", static_tokens=512))
    assert "micro-batches padded to exactly 512 tokens" in plan_training(cfg)
    static = train(cfg)
    for a, b in zip(plain.history, static.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
        assert a["tokens_per_s"] > 0 and b["tokens_per_s"] > 0
    assert static.report["settings"]["static_tokens"] == 512


# ------------------------------------------------------------------------------------------- compile
def test_compile_default_runs_the_steps_with_the_eager_loss(tiny_mamba_dir, sample_training, tmp_path, monkeypatch):
    """--compile default on a static run: the training forward goes through torch.compile (here its
    aot_eager backend: dynamo + AOTAutograd trace the model and its backward; inductor's cold compile of
    the tiny model takes 40-65 s on this CPU, see the GPU test below), with the eager run's losses."""
    from rerankers.train.loop import train

    calls = []
    real_compile = torch.compile

    def compile_aot_eager(model, mode=None, **kw):
        calls.append(mode)
        return real_compile(model, backend="aot_eager", **kw)

    eager = train(resolve_config(None, _settings(tiny_mamba_dir, sample_training, tmp_path / "eager",
                                                 static_tokens=512)))
    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    compiled = train(resolve_config(None, _settings(tiny_mamba_dir, sample_training, tmp_path / "compiled",
                                                    static_tokens=512, compile="default")))
    assert calls == ["default"]
    assert len(compiled.history) == len(eager.history) == 2
    for a, b in zip(eager.history, compiled.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="inductor's cold compile of even the tiny model takes "
                    "40-65 s on this CPU (measured); runs where CUDA is")
def test_compile_inductor_matches_eager_on_the_gpu(tiny_mamba_dir, sample_training, tmp_path):
    """The plain packed run (Triton kernels), then static shapes eager, compiled, and as CUDA graphs: one loss."""
    from rerankers.train.loop import train

    runs = [train(resolve_config(None, _settings(tiny_mamba_dir, sample_training, tmp_path / "plain", device="cuda",
                                                 dtype="float32")))]
    runs += [train(resolve_config(None, _settings(tiny_mamba_dir, sample_training, tmp_path / mode, device="cuda",
                                                  dtype="float32", static_tokens=512, compile=mode)))
             for mode in ("off", "default", "reduce-overhead")]
    for other in runs[1:]:
        for a, b in zip(runs[0].history, other.history):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)


def test_cuda_graphs_need_a_cuda_device(tiny_mamba_dir, sample_training, tmp_path):
    from rerankers.train.compile import GraphedForward
    from rerankers.train.loop import train
    from rerankers.train.run import plan_training

    plan = plan_training(resolve_config(None, _settings(tiny_mamba_dir, sample_training, tmp_path / "p",
                                                        static_tokens=512, compile="cuda-graphs")))
    assert "padded to exactly 512 tokens, forward + backward replayed from CUDA graphs" in plan
    if torch.cuda.is_available():
        pytest.skip("the CPU's refusal; the GPU test below runs the graphs")
    with pytest.raises(TrainingConfigError, match="^--compile cuda-graphs: CUDA graphs need a CUDA device, this run "
                                                  "is on cpu$"):
        train(resolve_config(None, _settings(tiny_mamba_dir, sample_training, tmp_path / "g", static_tokens=512,
                                             compile="cuda-graphs")))
    assert not (tmp_path / "g" / "model").exists()
    model = _model(tiny_mamba_dir)
    with pytest.raises(ValueError, match="need a CUDA device, the batch is on cpu"):
        GraphedForward(model)(random_batch([5, 7], 20, torch.Generator().manual_seed(0)))


@pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="CUDA graphs of the compiled Triton kernels: a CUDA device")
@pytest.mark.parametrize("kind", ["bert", "mamba"])
def test_cuda_graphs_train_as_the_eager_static_run(kind, tiny_bert_for, tiny_mamba_dir, sample_training, tmp_path):
    """--compile cuda-graphs replays the captured forward and backward; over 2-3 micro-batches a step (gradients
    accumulated into .grad across replays) the losses and (Mamba, fp32) the final weights are the eager static
    run's. BERT runs in bf16: in fp32 its packed attention is one SDPA per sequence, whose bounds the host reads
    (not capturable: the run stops with a ModelConfigError naming the flag)."""
    from safetensors.torch import load_file

    from rerankers.train.loop import train

    model_dir = tiny_bert_for(tmp_path / "bert", dropout=0.0) if kind == "bert" else tiny_mamba_dir
    runs = {}
    for mode in ("off", "cuda-graphs"):
        out = tmp_path / mode
        dtype = "bfloat16" if kind == "bert" else "float32"
        result = train(resolve_config(None, _settings(model_dir, sample_training, out, device="cuda", dtype=dtype,
                                                      static_tokens=512, compile=mode, max_steps=4, log_every=1)))
        weights = {k: v for f in sorted((out / "model").rglob("*.safetensors")) for k, v in load_file(f).items()}
        runs[mode] = ([h["loss"] for h in result.history], weights)
    assert runs["off"][0] == pytest.approx(runs["cuda-graphs"][0], rel=1e-4 if kind == "mamba" else 2e-3, abs=1e-5)
    if kind == "bert":
        return
    # the head's bias is left out: LCE is shift-invariant within a group, so its gradient is rounding noise, which
    # AdamW's first steps turn into updates of +-lr either way
    for k, v in runs["off"][1].items():
        if not k.endswith("out_proj.bias"):
            torch.testing.assert_close(runs["cuda-graphs"][1][k], v, rtol=1e-3, atol=1e-5, msg=k)


# -------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("values,needle", [
    ({"static_tokens": 1}, "--static-tokens: must hold a pair and a padding token (>= 2), got 1"),
    ({"static_tokens": 0}, "--static-tokens: must be a positive integer, got 0"),
    ({"static_tokens": "512"}, "--static-tokens: expected an integer, got '512'"),
    ({"compile": "fast"}, "--compile: one of off, default, reduce-overhead, cuda-graphs, got 'fast'"),
    ({"compile": "cuda-graphs"}, "--compile: cuda-graphs replays one captured shape: give every micro-batch one "
                                 "with --static-tokens"),
    ({"compile": "cuda-graphs", "static_tokens": 512, "gradient_checkpointing": True},
     "--compile: cuda-graphs: not with --gradient-checkpointing (its recomputation is not captured)"),
    ({"compile": True}, "--compile: expected a string, got True"),
])
def test_settings_are_validated(values, needle, sample_training, tmp_path):
    with pytest.raises(TrainingConfigError) as e:
        resolve_config(None, _settings(Path("m"), sample_training, tmp_path / "r", **values))
    assert str(e.value) == needle


def test_settings_from_yaml_and_flags(tmp_path):
    from rerankers.cli import _add_train_args

    (tmp_path / "c.yaml").write_text("backbone: m\nout: o\ntrain: [t]\nstatic-tokens: 4096\ncompile: reduce-overhead\n")
    cfg = resolve_config(tmp_path / "c.yaml")
    assert (cfg.static_tokens, cfg.compile) == (4096, "reduce-overhead")
    assert config_from_dict({}).static_tokens is None and config_from_dict({}).compile == "off"
    p = argparse.ArgumentParser()
    _add_train_args(p)
    args = vars(p.parse_args(["--static-tokens", "2048", "--compile", "default"]))
    assert args["static_tokens"] == 2048 and args["compile"] == "default"
    with pytest.raises(SystemExit):
        p.parse_args(["--compile", "max"])

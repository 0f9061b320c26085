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

from rerankers.data.packing import pack_token_ids, pad_to_static
from rerankers.errors import RerankersError
from rerankers.models.graphed import MIN_TOKENS, GraphedScorer, bucket_shape

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
    shape = bucket_shape(batch.num_tokens, batch.num_sequences, int(model.template.max_length),
                         int(model.tokenizer.pad_token_id or 0))
    with torch.no_grad():
        plain = model(batch)
        padded = model(pad_to_static(batch, shape))
    assert padded.shape == (shape.sequences,)
    torch.testing.assert_close(padded[:batch.num_sequences], plain, rtol=1e-5, atol=1e-6)


def test_graphs_need_cuda_and_a_packed_backbone(tmp_path):
    model = _tiny("mamba", tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(RerankersError, match=r"^cuda_graphs=True needs a CUDA device, got device 'cpu'$"):
            from rerankers.reranker import Reranker
            Reranker(model, device="cpu", cuda_graphs=True)
    batch = pack_token_ids([[1, 2, 3]])
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device, the batch is on cpu"):
        GraphedScorer(model, 64)(batch)


def test_graphs_refuse_a_backbone_without_a_fixed_shape_path(tmp_path, monkeypatch):
    from rerankers.reranker import _check_graphable

    model = _tiny("bert", tmp_path)
    monkeypatch.setattr(type(model), "backbone_type", property(lambda self: "t5"), raising=False)
    with pytest.raises(RerankersError, match="the t5 backbone has no fixed-shape packed path"):
        _check_graphable(model, torch.device("cuda"), 16384)
    monkeypatch.undo()
    with pytest.raises(RerankersError, match="batch_tokens >= 2"):
        _check_graphable(model, torch.device("cuda"), 1)


def test_cli_cuda_graphs_needs_a_model(capsys):
    from rerankers.cli import main

    assert main(["eval", "--run", "x.trec", "--qrels", "q.txt", "--cuda-graphs"]) == 2
    assert "--cuda-graphs applies to the reranking model: it needs --model" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="CUDA graphs replay compiled kernels on a GPU (CUDA_VISIBLE_DEVICES_FOR_TESTS=1)")
@pytest.mark.parametrize("kind", ["mamba", "bert"])
def test_cuda_graphed_reranker_scores_as_the_eager_one(kind, tmp_path):
    """bf16 autocast both ways: the graphed scores (batches of several buckets, each captured once, then replayed)
    equal the eager Reranker's within bf16's rounding of other matmul shapes; a second call captures nothing."""
    from rerankers.reranker import Reranker

    model = _tiny(kind, tmp_path).cuda()
    queries, docs = QUERIES * 40, (DOCS * 30)[:120]
    eager = torch.tensor(Reranker(model, device="cuda", batch_tokens=512).score_pairs(queries, docs))
    graphed = Reranker(model, device="cuda", batch_tokens=512, cuda_graphs=True)
    first = torch.tensor(graphed.score_pairs(queries, docs))
    n = graphed.graphed.num_graphs
    again = torch.tensor(graphed.score_pairs(queries, docs))
    assert 1 <= n <= 4 and graphed.graphed.num_graphs == n
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert float((first - eager).norm() / eager.norm()) < 3e-2


def test_bench_infer_graphed_needs_cuda_and_infer():
    from rerankers.bench.infer import InferBenchConfig, run_infer_bench
    from rerankers.bench.run import _check_options
    from rerankers.bench.train import TrainBenchConfig
    from rerankers.errors import UsageError

    with pytest.raises(UsageError, match="^--modes graphed: CUDA graphs need a CUDA device, got --device cpu$"):
        run_infer_bench(InferBenchConfig(modes=("graphed",), device="cpu"))
    with pytest.raises(UsageError, match="^--modes graphed: rerank bench infer only"):
        _check_options("train", TrainBenchConfig(modes=("graphed",)))

"""The one shared invariant test, over every backbone: packed == padded per sequence, and a loss on
one sequence gives exactly zero gradient to every other sequence of the pack."""
from __future__ import annotations

import pytest
import torch
from tiny_checkpoints import BUILDERS

from rerankers.data.batching import pack_encoded
from rerankers.data.packing import pack_token_ids
from rerankers.models.cross_encoder import CrossEncoder

QUERIES = ["what is a cat", "how many people live in berlin", "dogs", "water boils at how many degrees celsius"]
DOCS = ["a cat is an animal that purrs loudly at night", "berlin is the capital city of germany",
        "dogs bark", "water boils at 100 degrees celsius at sea level and fish swim in the river"]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def model(request, tmp_path_factory) -> CrossEncoder:
    kind = request.param
    folder = BUILDERS[kind](tmp_path_factory.mktemp(kind) / "ckpt")
    torch.manual_seed(0)
    ce = CrossEncoder.from_pretrained(folder).double().eval()
    return ce


def _embedding_module(ce: CrossEncoder) -> torch.nn.Module:
    return ce.backbone.get_input_embeddings()


def test_packed_equals_padded_and_single(model: CrossEncoder):
    enc = model.encode(QUERIES, DOCS)
    batch = pack_encoded(enc, range(len(QUERIES)))
    assert len(set(enc.lengths)) > 1  # unequal lengths: padding really happens
    with torch.no_grad():
        packed = model(batch)
        padded = model.forward_padded(batch)
        alone = torch.stack([model(pack_encoded(enc, [i]))[0] for i in range(len(QUERIES))])
    torch.testing.assert_close(packed, padded, rtol=0, atol=1e-10)
    torch.testing.assert_close(packed, alone, rtol=0, atol=1e-10)
    assert packed.std() > 1e-6  # the sequences get different scores (the comparison has teeth)


def _per_sequence_input_grads(model: CrossEncoder, batch, target: int, autocast: torch.dtype | None = None):
    """The gradient of ``scores[target]`` at the backbone's input embeddings, split by sequence (training graph,
    dropout off so that the run is deterministic)."""
    grabbed = {}

    def keep(_module, _inputs, output):
        if "emb" not in grabbed:  # the first call: the encoder's input (T5 embeds decoder tokens after)
            output.retain_grad()
            grabbed["emb"] = output

    handle = _embedding_module(model).register_forward_hook(keep)
    device = batch.input_ids.device.type
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        with torch.autocast(device, dtype=autocast or torch.float32, enabled=autocast is not None):
            scores = model(batch)
        scores[target].float().backward()
    finally:
        handle.remove()
        model.eval()
    g = grabbed["emb"].grad
    if model.backbone_type == "t5":  # padded (S, L, H): rows are sequences
        return [g[i] for i in range(g.shape[0])]
    g = g.reshape(-1, g.shape[-1])  # packed (T, H) or (1, T, H)
    cu = batch.cu_seqlens.tolist()
    return [g[cu[i]:cu[i + 1]] for i in range(len(cu) - 1)]


def _assert_only_target_has_gradient(per_seq, target: int) -> None:
    for i, gi in enumerate(per_seq):
        if i == target:
            assert gi.abs().sum() > 0
        else:
            assert torch.count_nonzero(gi) == 0, f"sequence {i} got gradient from a loss on sequence {target}"


def test_loss_on_one_sequence_leaves_others_zero_gradient(model: CrossEncoder):
    enc = model.encode(QUERIES, DOCS)
    batch = pack_encoded(enc, range(len(QUERIES)))
    _assert_only_target_has_gradient(_per_sequence_input_grads(model, batch, target=1), target=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU kernels (Triton scan, flash attention) need CUDA")
def test_on_the_gpu_in_bf16_packed_equals_padded_and_no_gradient_crosses(model: CrossEncoder):
    """The same invariants through the kernels the GPU runs under bf16 autocast (the Triton scan and conv, torch's
    flash kernels called directly): packed close to padded (other kernels, bf16 tolerance), and exactly zero
    gradient across sequences."""
    import copy
    gpu = copy.deepcopy(model).float().cuda()
    enc = gpu.encode(QUERIES, DOCS)
    batch = pack_encoded(enc, range(len(QUERIES))).to("cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        packed, padded = gpu(batch).float(), gpu.forward_padded(batch).float()
    assert (packed - padded).norm() <= 3e-2 * padded.norm() + 1e-3
    for target in (0, 3):
        _assert_only_target_has_gradient(_per_sequence_input_grads(gpu, batch, target, torch.bfloat16), target)


def test_pack_of_identical_sequences_gives_identical_scores(model: CrossEncoder):
    enc = model.encode([QUERIES[0]], [DOCS[0]])
    batch = pack_token_ids([enc.input_ids[0]] * 3, None if enc.token_type_ids is None else [enc.token_type_ids[0]] * 3)
    with torch.no_grad():
        s = model(batch)
    assert torch.equal(s[0], s[1]) or torch.allclose(s, s[0].expand(3), rtol=0, atol=1e-12)

"""Decoder backbones (GPT-NeoX/Pythia, OPT, Qwen2, Llama): the packed causal path equals transformers' own padded
forward, loading is strict, a saved cross-encoder scores the same, and training lowers the loss.
(packed == padded and zero gradient across pairs: tests/models/test_packed_invariants.py, over every kind.)"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_checkpoints import DECODER_TYPES, save_tiny_decoder, word_tokenizer, write_toy_training

from rerankers.data.batching import pack_encoded
from rerankers.errors import CheckpointMismatchError, ModelConfigError
from rerankers.models.cross_encoder import CrossEncoder

QUERIES = ["what is a cat", "how many people live in berlin", "dogs", "water boils at how many degrees celsius"]
DOCS = ["a cat is an animal that purrs loudly at night", "berlin is the capital city of germany",
        "dogs bark", "water boils at 100 degrees celsius at sea level and fish swim in the river"]


@pytest.fixture(scope="module", params=DECODER_TYPES)
def folder(request, tmp_path_factory):
    return save_tiny_decoder(tmp_path_factory.mktemp(request.param) / "ckpt", request.param)


def _reference_model(folder):
    """transformers' own base model of the checkpoint, eager attention (its causal + padding mask)."""
    from transformers import AutoModel
    return AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()


def _padded(enc, pad_id: int, left: bool = False):
    L = max(enc.lengths)
    ids = torch.full((len(enc.input_ids), L), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(enc.input_ids):
        cols = slice(L - len(seq), L) if left else slice(0, len(seq))
        ids[i, cols], mask[i, cols] = torch.tensor(seq), 1
    return ids, mask


def test_packed_hidden_states_and_scores_equal_transformers_padded_forward(folder):
    ce = CrossEncoder.from_pretrained(folder).eval()
    reference = _reference_model(folder)
    enc = ce.encode(QUERIES, DOCS)
    assert enc.input_ids[0][-1] == ce.tokenizer.eos_token_id  # the pooled token is the fixed EOS marker
    batch = pack_encoded(enc, range(len(QUERIES)))
    ids, mask = _padded(enc, ce.backbone.pad_token_id)
    with torch.no_grad():
        ours = ce.backbone(batch)  # (T, H)
        theirs = reference(input_ids=ids, attention_mask=mask).last_hidden_state  # (S, L, H)
        torch.testing.assert_close(ours, theirs[mask.bool()], rtol=1e-5, atol=1e-5)
        last = theirs[torch.arange(len(QUERIES)), batch.seqlens - 1]
        torch.testing.assert_close(ce(batch), ce.head(last), rtol=1e-5, atol=1e-5)
    assert ours.shape[1] == ce.backbone.hidden_size


def test_opt_positions_follow_the_mask_in_transformers_and_per_sequence_ids_here(tmp_path):
    """OPT derives positions from the attention mask (cumsum, offset 2): with left padding its own forward
    gives each real token the same position as our packed ids, so the two agree there too."""
    folder = save_tiny_decoder(tmp_path / "opt", "opt")
    ce = CrossEncoder.from_pretrained(folder).eval()
    enc = ce.encode(QUERIES, DOCS)
    ids, mask = _padded(enc, ce.backbone.pad_token_id, left=True)
    with torch.no_grad():
        theirs = _reference_model(folder)(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = ce.backbone(pack_encoded(enc, range(len(QUERIES))))
    torch.testing.assert_close(ours, theirs[mask.bool()], rtol=1e-5, atol=1e-5)


def test_saved_cross_encoder_scores_the_same_and_loads_strictly(folder, tmp_path):
    ce = CrossEncoder.from_pretrained(folder).eval()
    ce.save_pretrained(tmp_path / "saved")
    again = CrossEncoder.from_pretrained(tmp_path / "saved").eval()
    assert again.backbone_type == "decoder" and again.template == ce.template and again.template.name == "mamba"
    batch = pack_encoded(ce.encode(QUERIES, DOCS), range(len(QUERIES)))
    with torch.no_grad():
        assert torch.equal(ce(batch), again(batch))
    weights = tmp_path / "saved" / "backbone" / "model.safetensors"
    state = load_file(str(weights))
    save_file({**state, "extra.weight": torch.zeros(2)}, str(weights))
    with pytest.raises(CheckpointMismatchError, match=r"1 unexpected key\(s\): extra.weight"):
        CrossEncoder.from_pretrained(tmp_path / "saved")


def test_lm_head_and_old_buffers_are_ignored_but_a_missing_decoder_weight_is_an_error(folder, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    file = str(copy / "model.safetensors")
    state = load_file(file)
    hidden = next(v for k, v in state.items() if "embed" in k).shape[1]
    extra = {"lm_head.weight": torch.zeros(7, hidden), "layers.0.attention.masked_bias": torch.zeros(1)}
    save_file({**state, **extra}, file, metadata={"format": "pt"})
    with torch.no_grad():
        batch = pack_encoded(CrossEncoder.from_pretrained(folder).encode(QUERIES, DOCS), range(len(QUERIES)))
        torch.testing.assert_close(CrossEncoder.from_pretrained(copy).eval().backbone(batch),
                                   CrossEncoder.from_pretrained(folder).eval().backbone(batch), rtol=0, atol=0)
    norm = next(k for k in state if "norm" in k and k.endswith("weight"))
    del state[norm]
    save_file(state, file, metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError, match=r"1 missing key\(s\): .*norm.*weight"):
        CrossEncoder.from_pretrained(copy)


def test_a_tokenizer_without_padding_pads_with_eos_and_random_builds_keep_the_eos_row_trainable(tmp_path):
    folder = save_tiny_decoder(tmp_path / "llama", "llama")  # its tokenizer has no padding token
    ce = CrossEncoder.from_pretrained(folder)
    assert ce.tokenizer.pad_token_id == ce.tokenizer.eos_token_id is not None
    ce.save_pretrained(tmp_path / "saved")
    assert CrossEncoder.from_pretrained(tmp_path / "saved").tokenizer.pad_token_id == ce.tokenizer.eos_token_id
    tok_dir = tmp_path / "tok"
    word_tokenizer("mamba").save_pretrained(str(tok_dir))  # pads with its EOS
    random = CrossEncoder.from_backbone(folder, init="random", tokenizer=tok_dir)
    emb = random.backbone.get_input_embeddings()
    assert emb.padding_idx is None and emb.weight[random.tokenizer.eos_token_id].abs().sum() > 0


def test_unsupported_decoders_are_named(tmp_path):
    from transformers import Qwen2Config

    from rerankers.models.decoder import DecoderBackbone
    tok = word_tokenizer("mamba")
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=48, use_sliding_window=True, sliding_window=8, max_window_layers=0)
    with pytest.raises(ModelConfigError, match="sliding-window attention layers are not supported"):
        DecoderBackbone.from_config(cfg)
    ce = CrossEncoder.from_pretrained(save_tiny_decoder(tmp_path / "neox", "gpt_neox"))
    with pytest.raises(ModelConfigError, match="max_length=200 exceeds the model's 96 positions"):
        ce.spec.adapter().template(ce.backbone, {"max_length": 200})


def test_gradient_checkpointing_keeps_the_packed_path_and_the_gradients(tmp_path):
    from rerankers.models import decoder
    from rerankers.train.loop import _enable_gradient_checkpointing
    ce = CrossEncoder.from_pretrained(save_tiny_decoder(tmp_path / "neox", "gpt_neox")).double().train()
    batch = pack_encoded(ce.encode(QUERIES, DOCS), range(len(QUERIES)))
    grads = []
    for checkpointed in (False, True):
        if checkpointed:
            _enable_gradient_checkpointing(ce)
            assert ce.backbone.model.is_gradient_checkpointing
        ce.zero_grad()
        before = decoder.packed_calls
        torch.manual_seed(0)  # the same dropout masks (the recomputation replays the generator)
        ce(batch).sum().backward()
        layers = ce.backbone.config.num_hidden_layers
        assert decoder.packed_calls - before == layers * (2 if checkpointed else 1)  # recomputed in backward
        grads.append({n: p.grad.clone() for n, p in ce.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=1e-12)


def test_lora_adapts_the_attention_projections_and_merges_into_a_plain_decoder(tmp_path):
    pytest.importorskip("peft", reason="LoRA needs peft")
    from rerankers.train.lora import apply_lora, merged_copy
    ce = CrossEncoder.from_pretrained(save_tiny_decoder(tmp_path / "qwen2", "qwen2")).eval()
    apply_lora(ce, 2)
    trainable = [n for n, p in ce.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert any("q_proj.lora_A" in n for n in trainable) and any(n.startswith("head.") for n in trainable)
    with torch.no_grad():  # non-zero adapters, so that merging has something to merge
        for n, p in ce.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    batch = pack_encoded(ce.encode(QUERIES, DOCS), range(len(QUERIES)))
    merged = merged_copy(ce).eval()
    assert type(merged.backbone).__name__ == "DecoderBackbone"
    with torch.no_grad():
        torch.testing.assert_close(merged(batch), ce(batch), rtol=1e-5, atol=1e-5)


def test_rerank_train_on_a_tiny_decoder_folder_lowers_the_loss_with_gradient_checkpointing(tmp_path):
    from rerankers.train.config import resolve_config
    from rerankers.train.loop import train

    folder = save_tiny_decoder(tmp_path / "opt", "opt")
    data = write_toy_training(tmp_path / "toy.jsonl")
    cfg = resolve_config(None, dict(backbone=str(folder), out=str(tmp_path / "run"), train=[str(data)], group_size=4,
                                    queries_per_step=3, lr=1e-2, warmup_steps=2, max_steps=20, log_every=2,
                                    max_length=96, seed=1, gradient_checkpointing=True))
    result = train(cfg)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2, losses
    trained = CrossEncoder.from_pretrained(tmp_path / "run" / "model")
    assert trained.backbone_type == "decoder" and trained.head_trained


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_attention_follows_sdpa_dtype_policy_under_autocast(causal):
    """Under autocast, fp32 q/k/v (what rotary embeddings computed in fp32 leave: GPT-NeoX, Qwen, Llama) are
    attended in the autocast dtype, as SDPA would; on the GPU that picks the fused varlen kernel instead of the
    per-sequence fallback, which made the rotary decoders train 10x slower than OPT."""
    import torch.nn.functional as F

    from rerankers.models.varlen_attention import varlen_attention
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(7, 2, 8, generator=gen) for _ in range(3))
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = varlen_attention(q, k, v, cu, 4, causal=causal)
        sdpa = F.scaled_dot_product_attention(q[:3].transpose(0, 1), k[:3].transpose(0, 1), v[:3].transpose(0, 1),
                                              is_causal=causal)
    assert ours.dtype == sdpa.dtype == torch.bfloat16
    torch.testing.assert_close(ours[:3].float(), sdpa.transpose(0, 1).float(), rtol=2e-2, atol=2e-2)
    assert varlen_attention(q, k, v, cu, 4, causal=causal).dtype == torch.float32  # no autocast: as given

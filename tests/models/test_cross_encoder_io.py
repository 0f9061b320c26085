"""CrossEncoder folders: exact round trip for every backbone, strict head loading, bad configs."""
from __future__ import annotations

import json

import pytest
import torch

from rerankers.data.batching import pack_encoded
from rerankers.models.cross_encoder import CrossEncoder
from rerankers.models.errors import CheckpointMismatchError, ModelConfigError, ModelLoadingError

from tiny_checkpoints import BUILDERS, save_tiny_bert

QUERIES = ["what is a cat", "dogs"]
DOCS = ["a cat is an animal that purrs", "dogs bark loudly at night"]


@pytest.mark.parametrize("kind", ["bert", "t5", "mamba"])
def test_round_trip_is_exact(kind, tmp_path):
    torch.manual_seed(1)
    ce = CrossEncoder.from_pretrained(BUILDERS[kind](tmp_path / "src")).eval()
    ce.save_pretrained(tmp_path / "saved")
    files = {p.name for p in (tmp_path / "saved").iterdir()}
    assert {"reranker_config.json", "backbone", "tokenizer_config.json"} <= files
    assert ("head.safetensors" in files) == (kind != "t5")
    again = CrossEncoder.from_pretrained(tmp_path / "saved").eval()
    assert again.backbone_type == kind and again.template == ce.template
    batch = pack_encoded(ce.encode(QUERIES, DOCS), range(2))
    with torch.no_grad():
        assert torch.equal(ce(batch), again(batch))
    # saving over an existing folder replaces its files
    ce.save_pretrained(tmp_path / "saved")
    assert not [p for p in (tmp_path / "saved").iterdir() if p.name.startswith(".tmp")]


def test_missing_head_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file
    ce = CrossEncoder.from_pretrained(save_tiny_bert(tmp_path / "hf", "bert"))
    ce.save_pretrained(tmp_path / "saved")
    f = tmp_path / "saved" / "head.safetensors"
    state = load_file(str(f))
    state.pop("out_proj.bias")
    save_file(state, str(f))
    with pytest.raises(CheckpointMismatchError, match=r"1 missing key\(s\): head.out_proj.bias"):
        CrossEncoder.from_pretrained(tmp_path / "saved")


def test_bad_config_files(tmp_path):
    ce = CrossEncoder.from_pretrained(save_tiny_bert(tmp_path / "hf", "bert"))
    ce.save_pretrained(tmp_path / "saved")
    cfg_file = tmp_path / "saved" / "reranker_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg_file.write_text(json.dumps({**cfg, "backbone_type": "lstm"}))
    with pytest.raises(ModelConfigError, match="unknown backbone_type 'lstm'"):
        CrossEncoder.from_pretrained(tmp_path / "saved")
    cfg_file.write_text("{not json")
    with pytest.raises(ModelConfigError, match="reranker_config.json: unreadable JSON"):
        CrossEncoder.from_pretrained(tmp_path / "saved")
    cfg_file.write_text(json.dumps(cfg))
    (tmp_path / "saved" / "head.safetensors").unlink()
    with pytest.raises(ModelLoadingError, match="head's weights are missing"):
        CrossEncoder.from_pretrained(tmp_path / "saved")


def test_multi_label_classifier_is_refused(tmp_path):
    from transformers import BertForSequenceClassification
    from tiny_checkpoints import bert_config, word_tokenizer
    tok = word_tokenizer("bert")
    BertForSequenceClassification(bert_config("bert", len(tok), num_labels=3)).save_pretrained(str(tmp_path / "m"))
    tok.save_pretrained(str(tmp_path / "m"))
    with pytest.raises(ModelConfigError, match="3 outputs"):
        CrossEncoder.from_pretrained(tmp_path / "m")

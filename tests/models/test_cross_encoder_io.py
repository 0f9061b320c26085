"""CrossEncoder folders: exact round trip for every backbone, strict head loading, bad configs."""
from __future__ import annotations

import json

import pytest
import torch
from tiny_checkpoints import BUILDERS, save_tiny_bert

from rerankers.data.batching import pack_encoded
from rerankers.data.templates import TemplateConfig
from rerankers.errors import CheckpointMismatchError, ModelConfigError, ModelLoadingError
from rerankers.models.cross_encoder import CrossEncoder

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
    f.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadingError, match=r"head.safetensors: cannot read the weights"):
        CrossEncoder.from_pretrained(tmp_path / "saved")


def test_bad_config_files(tmp_path):
    ce = CrossEncoder.from_pretrained(save_tiny_bert(tmp_path / "hf", "bert"))
    ce.save_pretrained(tmp_path / "saved")
    cfg_file = tmp_path / "saved" / "reranker_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg_file.write_text(json.dumps({**cfg, "backbone_type": "gru"}))
    with pytest.raises(ModelConfigError, match="unknown backbone_type 'gru'"):
        CrossEncoder.from_pretrained(tmp_path / "saved")
    cfg_file.write_text("{not json")
    with pytest.raises(ModelConfigError, match="reranker_config.json: unreadable JSON"):
        CrossEncoder.from_pretrained(tmp_path / "saved")
    cfg_file.write_text(json.dumps(cfg))
    (tmp_path / "saved" / "head.safetensors").unlink()
    with pytest.raises(ModelLoadingError, match="head's weights are missing"):
        CrossEncoder.from_pretrained(tmp_path / "saved")


def test_multi_label_classifier_is_refused(tmp_path):
    from tiny_checkpoints import bert_config, word_tokenizer
    from transformers import BertForSequenceClassification
    tok = word_tokenizer("bert")
    BertForSequenceClassification(bert_config("bert", len(tok), num_labels=3)).save_pretrained(str(tmp_path / "m"))
    tok.save_pretrained(str(tmp_path / "m"))
    with pytest.raises(ModelConfigError, match="3 outputs"):
        CrossEncoder.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("edit,match", [
    (lambda c: [c], r"not a rerankers-cross-encoder config \(format='list'\)"),
    (lambda c: {**c, "template": "mamba"}, "'template' and 'head' must be JSON objects"),
    (lambda c: {**c, "template": {**c["template"], "name": "gpt"}}, "template: unknown template 'gpt'"),
    (lambda c: {**c, "template": {**c["template"], "name": "mamba"}},
     "template 'mamba' does not fit backbone_type 'bert'"),
    (lambda c: {**c, "template": {**c["template"], "max_length": "long"}}, "template: "),
    (lambda c: {**c, "template": {**c["template"], "max_length": 4096}},
     "max_length=4096 exceeds the model's 96 positions"),
    (lambda c: {**c, "head": {"activation": "relu"}}, "unknown head activation 'relu'"),
    (lambda c: {**c, "template": {**c["template"], "max_lenght": 64}}, "unknown template key\\(s\\) 'max_lenght'"),
], ids=["list", "template-string", "template-unknown", "template-of-mamba", "max-length-string", "max-length-too-long",
        "head-activation", "template-key-typo"])
def test_bad_saved_config_fields_are_model_config_errors(edit, match, tmp_path):
    ce = CrossEncoder.from_pretrained(save_tiny_bert(tmp_path / "hf", "bert"))
    ce.save_pretrained(tmp_path / "saved")
    cfg_file = tmp_path / "saved" / "reranker_config.json"
    cfg_file.write_text(json.dumps(edit(json.loads(cfg_file.read_text()))))
    with pytest.raises(ModelConfigError, match=match):
        CrossEncoder.from_pretrained(tmp_path / "saved")


def test_t5_config_without_token_ids_and_bad_template_overrides(tmp_path):
    from tiny_checkpoints import save_tiny_t5
    ce = CrossEncoder.from_pretrained(save_tiny_t5(tmp_path / "t5"))
    ce.save_pretrained(tmp_path / "saved")
    cfg_file = tmp_path / "saved" / "reranker_config.json"
    cfg = json.loads(cfg_file.read_text())
    del cfg["true_token_id"]
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ModelConfigError, match="missing field 'true_token_id'"):
        CrossEncoder.from_pretrained(tmp_path / "saved")
    with pytest.raises(ModelConfigError, match="must exceed max_query_tokens"):
        CrossEncoder.from_backbone(tmp_path / "t5", template={"max_length": 10})
    with pytest.raises(ModelConfigError, match="unexpected keyword argument 'maxlen'"):
        CrossEncoder.from_backbone(tmp_path / "t5", template={"maxlen": 10})
    with pytest.raises(ModelConfigError, match="a t5 backbone needs the 't5' template, got 'bert'"):
        CrossEncoder(ce.backbone, None, ce.tokenizer, TemplateConfig("bert"), "t5")


def test_template_errors_are_rerankers_errors():
    from tiny_checkpoints import word_tokenizer

    from rerankers.data.templates import encode_pairs
    from rerankers.errors import RerankersError, TemplateError
    assert issubclass(TemplateError, RerankersError)
    with pytest.raises(TemplateError, match="1 queries but 2 documents"):
        encode_pairs(word_tokenizer("bert"), ["a"], ["b", "c"], TemplateConfig("bert"))
    bert = word_tokenizer("bert")  # no EOS: the Mamba template ends with [SEP] (one vocabulary for both)
    assert encode_pairs(bert, ["a"], ["b"], TemplateConfig("mamba")).input_ids[0][-1] == bert.sep_token_id
    bert.sep_token = None
    with pytest.raises(TemplateError, match="has no eos_token_id or sep_token_id"):
        encode_pairs(bert, ["a"], ["b"], TemplateConfig("mamba"))


@pytest.mark.parametrize("kind", ["bert", "mamba"])
def test_saved_files_follow_the_umask_and_leave_no_temporary(kind, tmp_path):
    """Under umask 022 every file of a saved model is 0644 (the Mamba checkpoint writer once left 0600)."""
    import os
    ce = CrossEncoder.from_pretrained(BUILDERS[kind](tmp_path / "src"))
    old = os.umask(0o022)
    try:
        ce.save_pretrained(tmp_path / "runs" / "saved")
        ce.backbone.save_pretrained(tmp_path / "backbone-alone")  # the backbone's own writer, outside a model folder
    finally:
        os.umask(old)
    for folder in (tmp_path / "runs" / "saved", tmp_path / "backbone-alone"):
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert files and {p.stat().st_mode & 0o777 for p in files} == {0o644}, folder
    assert (tmp_path / "runs" / "saved" / "backbone").stat().st_mode & 0o777 == 0o755
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["saved"]  # the temporary sibling is gone


def test_mean_pooling_is_the_same_packed_and_padded_and_survives_a_save(tmp_path):
    """--pooling mean: the mean over each pair's tokens (per sequence of the pack), kept by save/load."""
    from rerankers.data.batching import pack_encoded

    ce = CrossEncoder.from_pretrained(save_tiny_bert(tmp_path / "hf", "bert")).eval()
    ce.set_pooling("mean")
    enc = ce.encode(["what is a cat", "how many people live in berlin"], ["a cat is an animal", "berlin city"])
    batch = pack_encoded(enc, [0, 1])
    with torch.no_grad():
        packed, padded = ce(batch), ce.forward_padded(batch)
        hidden = ce.backbone(batch)
        direct = ce._head(torch.stack([hidden[:len(enc.input_ids[0])].mean(0), hidden[len(enc.input_ids[0]):].mean(0)]))
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed, direct, rtol=1e-5, atol=1e-6)
    ce.save_pretrained(tmp_path / "saved")
    again = CrossEncoder.from_pretrained(tmp_path / "saved").eval()
    assert again.pooling == "mean"
    with torch.no_grad():
        torch.testing.assert_close(again(batch), packed)
    with pytest.raises(ModelConfigError, match="pooling 'max'"):
        ce.set_pooling("max")


def test_a_training_output_folder_names_its_model(tmp_path):
    """`rerank train --out runs/x` writes runs/x/model/ (and best/): runs/x given as the model says so (issue 10)."""
    ce = CrossEncoder.from_pretrained(save_tiny_bert(tmp_path / "hf", "bert"))
    for name in ("model", "best"):
        ce.save_pretrained(tmp_path / "out" / name)
    with pytest.raises(ModelLoadingError) as e:
        CrossEncoder.from_pretrained(tmp_path / "out")
    assert str(e.value) == (f"{tmp_path / 'out'} is a training output folder, not a model: its model is "
                            f"{tmp_path / 'out' / 'model'} (the best dev checkpoint: {tmp_path / 'out' / 'best'})")


def test_an_untrained_head_warns_unless_the_model_is_built_to_be_trained(tiny_checkpoints, tmp_path, caplog):
    """Scoring with a fresh head is a WARNING; rerank train / rerank bench build one on purpose (INFO)."""
    import logging

    from rerankers.models.cross_encoder import CrossEncoder, to_be_trained
    folder = tiny_checkpoints.save_tiny_bert(tmp_path / "base", "bert", classification=False)
    with caplog.at_level(logging.INFO, logger="rerankers"):
        CrossEncoder.from_backbone(folder)
        with to_be_trained():
            CrossEncoder.from_backbone(folder)
    untrained = [r for r in caplog.records if "scoring head is not trained" in r.getMessage()
                 or "not trained yet" in r.getMessage()]
    assert [r.levelno for r in untrained] == [logging.WARNING, logging.INFO]

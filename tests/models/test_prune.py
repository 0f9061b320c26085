"""Static pruning (rerankers.models.prune): pruned folders load strictly and score, with fewer parameters;
what is cut is what the criteria say; removing parts that contribute nothing changes no score."""
from __future__ import annotations

import json

import pytest
import torch

from rerankers.errors import CheckpointMismatchError, ModelConfigError, UsageError
from rerankers.models.cross_encoder import CrossEncoder
from rerankers.models.prune import HEADS_KEY, PRUNE_INFO, evenly_spaced_layers, prune_folder, prune_model
from rerankers.reranker import Reranker
from rerankers.train.progress import count_parameters

QUERY = "what is a cat"
DOCS = ["a cat purrs at night", "the dog barks loudly", "water boils at degrees celsius", "berlin is a city"]


def _scores(model) -> list[float]:
    return Reranker(model, device="cpu").score(QUERY, DOCS)


def test_evenly_spaced_layers_keep_the_first_and_the_last():
    assert evenly_spaced_layers(24, 12) == [0, 2, 4, 6, 8, 10, 13, 15, 17, 19, 21, 23]
    assert evenly_spaced_layers(6, 1) == [5] and evenly_spaced_layers(6, 2) == [0, 5]
    assert evenly_spaced_layers(5, 5) == [0, 1, 2, 3, 4]


def test_pruned_bert_loads_strictly_scores_and_is_smaller(tiny_cross_encoder, tmp_path):
    report = prune_folder(tiny_cross_encoder, tmp_path / "p", heads_per_layer=2, ffn_keep=0.5, layers_keep=1)
    model = CrossEncoder.from_pretrained(tmp_path / "p")
    assert report.parameters_after == count_parameters(model)["total"] < report.parameters_before
    layers = model.backbone.model.encoder.layer
    assert len(layers) == 1 and layers[0].attention.self.query.out_features == 2 * 8  # head size kept (32 / 4)
    assert layers[0].intermediate.dense.out_features == 24  # half of 48
    assert getattr(model.backbone.config, HEADS_KEY) == [2] and model.head_trained
    scores = _scores(model)
    assert len(scores) == 4 and all(torch.isfinite(torch.tensor(scores)))
    info = json.loads((tmp_path / "p" / PRUNE_INFO).read_text())
    assert info["layers"] == [1] and len(info["heads"]) == 1 and len(info["heads"][0]) == 2 and info["ffn"] == 24
    assert info["source"] == str(tiny_cross_encoder) and set(info["criteria"]) == {"layers", "heads", "ffn"}
    # a pruned folder is pruned further the same way (its recorded head counts go along)
    again = prune_folder(tmp_path / "p", tmp_path / "p2", heads_per_layer=1)
    assert again.parameters_after < report.parameters_after
    assert getattr(CrossEncoder.from_pretrained(tmp_path / "p2").backbone.config, HEADS_KEY) == [1]


def test_cutting_heads_and_channels_that_contribute_nothing_changes_no_score(tiny_cross_encoder, tmp_path):
    """Heads whose value projection is zero and FFN channels whose output column is zero add nothing: the
    criteria rank them last, and slicing them out must leave every score as it was."""
    model = CrossEncoder.from_pretrained(tiny_cross_encoder).eval()
    layers = model.backbone.model.encoder.layer
    d = 8
    with torch.no_grad():
        for i, layer in enumerate(layers):
            dead = (1 + i) % 4  # another head in each layer
            layer.attention.self.value.weight[dead * d:(dead + 1) * d] = 0
            layer.attention.self.value.bias[dead * d:(dead + 1) * d] = 0
            layer.output.dense.weight[:, ::2] = 0  # every other FFN channel writes nothing
    before = _scores(model)
    report = prune_model(model, heads_per_layer=3, ffn_keep=24)
    assert report.heads == [[0, 2, 3], [0, 1, 3]] and report.ffn == 24
    assert all(layer.output.dense.weight.abs().min(dim=0).values.gt(0).all() for layer in layers)
    assert _scores(model) == pytest.approx(before, abs=1e-5)
    model.save_pretrained(tmp_path / "saved")
    assert _scores(CrossEncoder.from_pretrained(tmp_path / "saved")) == pytest.approx(before, abs=1e-5)


def test_pruned_mamba_keeps_layers_and_a_silent_layer_is_cut_without_change(tiny_checkpoints, tmp_path):
    folder = tiny_checkpoints.save_tiny_mamba(tmp_path / "hf")
    model = CrossEncoder.from_pretrained(folder).eval()
    with torch.no_grad():  # layer 0 adds nothing to the residual stream
        model.backbone.layers[0].mixer.out_proj.weight.zero_()
    model.save_pretrained(tmp_path / "ce")
    before = _scores(model)
    report = prune_folder(tmp_path / "ce", tmp_path / "p", layers_keep=[1])
    pruned = CrossEncoder.from_pretrained(tmp_path / "p")
    assert report.layers == [1] and pruned.backbone.config.n_layer == len(pruned.backbone.layers) == 1
    assert report.parameters_after == count_parameters(pruned)["total"] < report.parameters_before
    assert _scores(pruned) == pytest.approx(before, abs=1e-5)
    assert len(prune_folder(tmp_path / "ce", tmp_path / "p1", layers_keep=1).layers) == 1


def test_a_pruned_folder_is_loaded_strictly(tiny_cross_encoder, tmp_path):
    prune_folder(tiny_cross_encoder, tmp_path / "p", heads_per_layer=2)
    cfg_file = tmp_path / "p" / "backbone" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    assert cfg[HEADS_KEY] == [2, 2]
    cfg_file.write_text(json.dumps({**cfg, HEADS_KEY: [3, 2]}))  # a record that does not fit the weights
    with pytest.raises(CheckpointMismatchError, match="wrong shape"):
        CrossEncoder.from_pretrained(tmp_path / "p")
    cfg_file.write_text(json.dumps({**cfg, HEADS_KEY: [2]}))  # one count for two layers
    with pytest.raises(ModelConfigError, match=HEADS_KEY):
        CrossEncoder.from_pretrained(tmp_path / "p")
    cfg_file.write_text(json.dumps({k: v for k, v in cfg.items() if k != HEADS_KEY}))  # the record lost
    with pytest.raises(CheckpointMismatchError):
        CrossEncoder.from_pretrained(tmp_path / "p")


def test_export_refuses_pruned_heads(tiny_cross_encoder, tmp_path):
    from rerankers.models.bert import export_sequence_classification

    prune_folder(tiny_cross_encoder, tmp_path / "p", heads_per_layer=2)
    with pytest.raises(ModelConfigError, match="pruned attention heads"):
        export_sequence_classification(CrossEncoder.from_pretrained(tmp_path / "p"), tmp_path / "hf")


@pytest.mark.parametrize("kwargs, message", [
    ({}, "nothing to prune"),
    ({"heads_per_layer": 0}, "--heads-per-layer 0"),
    ({"heads_per_layer": 5}, "keep 1 to 4"),
    ({"ffn_keep": 49}, "--ffn-keep 49"),
    ({"ffn_keep": 2.5}, "--ffn-keep 2.5"),
    ({"layers_keep": 0}, "--layers-keep 0"),
    ({"layers_keep": 3}, "the model has 2 layers"),
    ({"layers_keep": [0, 7]}, "indices between 0 and 1"),
])
def test_values_that_cannot_apply_are_usage_errors(kwargs, message, tiny_cross_encoder):
    with pytest.raises(UsageError, match=message):
        prune_model(CrossEncoder.from_pretrained(tiny_cross_encoder), **kwargs)


def test_kinds_and_folders_that_cannot_be_pruned(tiny_checkpoints, tiny_cross_encoder, tmp_path):
    mamba = CrossEncoder.from_pretrained(tiny_checkpoints.save_tiny_mamba(tmp_path / "m"))
    with pytest.raises(UsageError, match="--heads-per-layer: a mamba backbone has no attention heads"):
        prune_model(mamba, heads_per_layer=1)
    t5 = CrossEncoder.from_pretrained(tiny_checkpoints.save_tiny_t5(tmp_path / "t5"))
    with pytest.raises(UsageError, match="a t5 backbone cannot be pruned"):
        prune_model(t5, layers_keep=1)
    with pytest.raises(UsageError, match="another folder"):
        prune_folder(tiny_cross_encoder, tiny_cross_encoder, layers_keep=1)

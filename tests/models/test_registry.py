"""The backbone registry: one row per kind decides detection, template, pooling, head and padding."""
from __future__ import annotations

import json

import pytest
from tiny_checkpoints import BUILDERS

from rerankers.errors import ModelConfigError
from rerankers.models.adapter import BackboneAdapter
from rerankers.models.registry import BACKBONES, backbone_spec, detect_backbone_kind, read_config_json


@pytest.mark.parametrize("config,kind", [
    ({"model_type": "bert"}, "bert"), ({"model_type": "electra"}, "bert"), ({"model_type": "roberta"}, "bert"),
    ({"model_type": "xlm-roberta"}, "bert"), ({"model_type": "t5", "d_model": 8}, "t5"), ({"model_type": "mt5"}, "t5"),
    ({"model_type": "mamba", "hidden_size": 8}, "mamba"), ({"d_model": 8, "n_layer": 2, "vocab_size": 10}, "mamba"),
])
def test_kinds_are_detected_from_config_json(config, kind):
    assert detect_backbone_kind(config) == kind


def test_unknown_model_types_and_kinds_name_the_file_and_the_known_ones(tmp_path):
    with pytest.raises(ModelConfigError, match=r"^m/config.json: model_type 'gpt2' is not a supported backbone; "
                                               r"known: mamba \(mamba\), bert \(bert/electra/roberta/xlm-roberta\)"):
        detect_backbone_kind({"model_type": "gpt2"}, "m/config.json")
    with pytest.raises(ModelConfigError, match=r"^r.json: unknown backbone_type 'gru' \(mamba, bert, t5, "):
        backbone_spec("gru", "r.json")
    with pytest.raises(ModelConfigError, match="no config.json"):
        read_config_json(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps([1]))
    with pytest.raises(ModelConfigError, match="config.json: expected a JSON object, got list"):
        read_config_json(tmp_path)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_each_row_describes_the_model_it_builds(kind, tmp_path):
    """The row's pooling, head, padding and template are those of the cross-encoder its adapter builds."""
    from rerankers.models.cross_encoder import CrossEncoder
    ce = CrossEncoder.from_pretrained(BUILDERS[kind](tmp_path / kind))
    spec = BACKBONES[ce.backbone_type]
    adapter = spec.adapter()
    assert isinstance(adapter, BackboneAdapter) and adapter.kind == spec.kind
    assert ce.backbone.pooling == spec.pooling == ce.pooling and ce.pads is spec.pads
    assert (ce.head is not None) is spec.has_head and ce.template.name == spec.template
    assert set(spec.saved_fields) <= set(ce.config_dict())

"""Backbones (Mamba-1, BERT family, T5), their registry, pooling, heads and the cross-encoder.

    CrossEncoder        backbone + pooling + head, from_backbone / save_pretrained / from_pretrained
    BACKBONES           the registry: backbone kind -> BackboneSpec (detection, template, pooling,
                        head, padding, adapter), see models/registry.py
    MambaBackbone       our Mamba-1 (packed; last-token pooling)
    Mamba2Backbone      our Mamba-2 (packed, varlen SSD scan; last-token pooling)
    BertBackbone        transformers BERT/ELECTRA/RoBERTa/MiniLM with varlen attention ([CLS] pooling)
    T5Backbone          monoT5 scorer (true/false logits at the first decoder step)
    PRESETS             named backbones (mamba-130m ... t5-large) with their shapes, see models/presets.py
    MambaConfig         Mamba-1 config (both checkpoint formats); Mamba2Config the same for Mamba-2
    ModelLoadingError, CheckpointNotFoundError, ModelConfigError, CheckpointMismatchError

Names are imported on first use (torch/transformers load lazily).
"""
__all__ = ["CrossEncoder", "BACKBONES", "BackboneSpec", "MambaBackbone", "MambaConfig", "Mamba2Backbone",
           "Mamba2Config", "BertBackbone",
           "T5Backbone", "PRESETS", "known_backbones", "ModelLoadingError", "CheckpointNotFoundError",
           "ModelConfigError", "CheckpointMismatchError"]

_WHERE = {
    "CrossEncoder": "rerankers.models.cross_encoder",
    "BACKBONES": "rerankers.models.registry",
    "BackboneSpec": "rerankers.models.registry",
    "MambaBackbone": "rerankers.models.mamba",
    "MambaConfig": "rerankers.models.mamba_config",
    "Mamba2Backbone": "rerankers.models.mamba2",
    "Mamba2Config": "rerankers.models.mamba2_config",
    "BertBackbone": "rerankers.models.bert",
    "T5Backbone": "rerankers.models.t5",
    "PRESETS": "rerankers.models.presets",
    "known_backbones": "rerankers.models.presets",
    **{name: "rerankers.errors" for name in ("ModelLoadingError", "CheckpointNotFoundError", "ModelConfigError",
                                             "CheckpointMismatchError")},
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'rerankers.models' has no attribute {name!r}")

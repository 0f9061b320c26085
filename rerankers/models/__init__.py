"""Backbones (Mamba-1, BERT family, T5), pooling, heads and the cross-encoder.

    CrossEncoder        backbone + pooling + head, save_pretrained / from_pretrained
    MambaBackbone       our Mamba-1 (packed; last-token pooling)
    BertBackbone        transformers BERT/ELECTRA/RoBERTa/MiniLM with varlen attention ([CLS] pooling)
    T5Backbone          monoT5 scorer (true/false logits at the first decoder step)
    PRESETS             named backbones (mamba-130m ... t5-base), see models/presets.py

Names are imported on first use (torch/transformers load lazily).
"""
__all__ = ["CrossEncoder", "MambaBackbone", "BertBackbone", "T5Backbone", "PRESETS", "known_backbones"]

_WHERE = {
    "CrossEncoder": "rerankers.models.cross_encoder",
    "MambaBackbone": "rerankers.models.mamba",
    "BertBackbone": "rerankers.models.bert",
    "T5Backbone": "rerankers.models.t5",
    "PRESETS": "rerankers.models.presets",
    "known_backbones": "rerankers.models.presets",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'rerankers.models' has no attribute {name!r}")

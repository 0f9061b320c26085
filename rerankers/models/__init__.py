"""Backbones (Mamba-1, BERT family, T5), pooling, heads and the cross-encoder.

    CrossEncoder        backbone + pooling + head, save_pretrained / from_pretrained
    PRESETS             named backbones (mamba-130m ... t5-base), see models/presets.py
"""
__all__ = ["CrossEncoder", "PRESETS", "known_backbones"]


def __getattr__(name: str):
    if name == "CrossEncoder":
        from rerankers.models.cross_encoder import CrossEncoder
        return CrossEncoder
    if name in ("PRESETS", "known_backbones"):
        from rerankers.models import presets
        return getattr(presets, name)
    raise AttributeError(f"module 'rerankers.models' has no attribute {name!r}")

"""rerankers: Mamba and Transformer cross-encoder rerankers, compared on quality and cost.

Public API::

    from rerankers import Reranker, CrossEncoder
    Reranker.from_pretrained("path/or/preset").rerank(query, docs)

The heavy modules (torch, transformers) are imported on first use of these names.
"""
__version__ = "0.1.0"

__all__ = ["Reranker", "CrossEncoder", "RankedResult", "__version__"]


def __getattr__(name: str):
    if name in ("Reranker", "RankedResult"):
        from rerankers import reranker
        return getattr(reranker, name)
    if name == "CrossEncoder":
        from rerankers.models.cross_encoder import CrossEncoder
        return CrossEncoder
    raise AttributeError(f"module 'rerankers' has no attribute {name!r}")

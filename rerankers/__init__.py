"""rerankers: Mamba and Transformer cross-encoder rerankers, compared on quality and cost."""
__version__ = "0.1.0"

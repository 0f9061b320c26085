"""Small shared helpers: atomic file output."""
from rerankers.utils.io import atomic_write

__all__ = ["atomic_write"]

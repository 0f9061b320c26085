"""Small shared helpers: atomic file output, the user-facing error base class."""
from rerankers.utils.errors import RerankersError
from rerankers.utils.io import atomic_write

__all__ = ["RerankersError", "atomic_write"]

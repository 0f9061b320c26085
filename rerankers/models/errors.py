"""Errors raised while building or loading a model (backbones, cross-encoders).

Every loader turns a bad checkpoint, config or name into one of these, with the file, key or
argument named, instead of a deep library traceback.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

from rerankers.utils.errors import RerankersError


class ModelLoadingError(RerankersError):
    """Base class: a model could not be built or loaded (the CLI prints it as one line)."""


class CheckpointNotFoundError(ModelLoadingError, FileNotFoundError):
    """A name or path does not resolve to a checkpoint (not a local directory, not reachable/cached)."""


class ModelConfigError(ModelLoadingError, ValueError):
    """A config file is unreadable, of an unknown format, or describes an unsupported model."""


def _preview(keys: Sequence[str], limit: int) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


class CheckpointMismatchError(ModelLoadingError):
    """The checkpoint's tensors do not match the model built from its config.

    Attributes:
        missing:    keys the model needs that the checkpoint lacks
        unexpected: keys in the checkpoint the model does not have
        mismatched: (key, checkpoint shape, model shape) for keys present in both with other shapes
        source:     the checkpoint (path or name) the tensors came from
    """

    def __init__(self, missing: Iterable[str] = (), unexpected: Iterable[str] = (),
                 mismatched: Iterable[tuple[str, tuple, tuple]] = (), source: Optional[str] = None,
                 limit: int = 10):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        self.source = source
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s): {_preview(self.missing, limit)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s): {_preview(self.unexpected, limit)}")
        if self.mismatched:
            shapes = [f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in self.mismatched]
            parts.append(f"{len(shapes)} key(s) with a wrong shape: {_preview(shapes, limit)}")
        where = f" in {source}" if source else ""
        super().__init__(f"checkpoint{where} does not match its config: " + "; ".join(parts))

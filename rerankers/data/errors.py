"""Errors raised by the data readers: they name the file and, where it applies, the line."""
from __future__ import annotations

import os

from rerankers.utils.errors import RerankersError


class DataFormatError(RerankersError, ValueError):
    """A malformed input file: the message names the file and the 1-based line number.

    Attributes:
        path: the file (str).
        line: 1-based line number, or None where the problem concerns the whole file.
        reason: the problem, without the location.
    """

    def __init__(self, path: str | os.PathLike, line: int | None, reason: str):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class UnknownDatasetError(RerankersError, KeyError):
    """A dataset name that is neither a known short name, an ir_datasets id, nor an existing file."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetLoadError(RerankersError):
    """ir_datasets knows the dataset but could not provide it (e.g. not downloaded, offline)."""

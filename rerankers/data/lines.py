"""Line-by-line reading of text inputs with file/line-aware errors (plain or gzip-compressed)."""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Iterator

from rerankers.errors import DataFormatError


def check_readable(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path, or raise DataFormatError if it is missing, a folder, or empty."""
    p = Path(path)
    if not p.exists():
        raise DataFormatError(p, None, "no such file")
    if p.is_dir():
        raise DataFormatError(p, None, "is a directory, expected a file")
    if p.stat().st_size == 0:
        raise DataFormatError(p, None, "file is empty")
    return p


def iter_lines(path: str | os.PathLike, skip_blank: bool = True) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` pairs (1-based; the line without its end-of-line characters).

    ``.gz`` files are decompressed on the fly. Blank lines are skipped unless ``skip_blank`` is False.
    Lines end at ``\n`` only (a ``\r\n`` ending is stripped; a lone ``\r`` inside a line is text, not
    a line break), and a UTF-8 byte order mark at the start of the file is dropped.
    Raises DataFormatError for a missing or empty file, undecodable UTF-8, or a file with only blank
    lines.
    """
    p = check_readable(path)
    opener = gzip.open if p.suffix == ".gz" else open
    seen = False
    try:
        with opener(p, "rb") as f:  # bytes, decoded line by line: a decoding error names its own line
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise DataFormatError(p, lineno, f"not valid UTF-8 text ({e.reason})") from None
                if skip_blank and not line.strip():
                    continue
                seen = True
                yield lineno, line
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise DataFormatError(p, None, f"cannot read file: {e}") from None
    if not seen:
        raise DataFormatError(p, None, "file has no content (only blank lines)")

"""Progress bars of long loops (reranking a run, ...): tqdm on stderr, by tqdm's conventions.

A bar is shown where stderr is a terminal (tqdm's ``disable=None``), appears only once a loop has run for
:data:`DELAY_S` seconds (a quick call draws nothing), and is off where the package's logger was set above
INFO (``rerank -q`` sets it to ERROR). A library user who leaves logging alone sees bars in a terminal.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Iterable

from tqdm.auto import tqdm

DELAY_S = 2.0


def progress_disable() -> bool | None:
    """tqdm's ``disable`` for the package: True (off) where the ``rerankers`` logger was set above INFO, else
    None (tqdm decides: on a terminal only)."""
    level = logging.getLogger("rerankers").level
    return True if level > logging.INFO else None


def progress_shown() -> bool:
    """Whether a bar would be drawn now: stderr is a terminal and the package is not quiet (for libraries that
    take a ``show_progress`` flag, such as bm25s)."""
    return progress_disable() is None and bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on stderr with the package's defaults (see the module doc)."""
    kwargs.setdefault("disable", progress_disable())
    kwargs.setdefault("delay", DELAY_S)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)

"""TREC run and qrels files.

Types (plain dicts, the form ranx and pytrec_eval take):

- ``Run = dict[qid, dict[docid, float]]``: a ranking per query, by score (higher is better).
- ``Qrels = dict[qid, dict[docid, int]]``: graded judgments (TREC DL: 0-3; negatives allowed).

Run files have six whitespace-separated columns, ``qid Q0 docid rank score tag``; as in trec_eval,
the rank column is read but ignored: order comes from the score; anything after the tag is ignored,
as trec_eval does. MS MARCO's three-column run format
``qid docid rank`` is also accepted (score = -rank). Qrels have four, ``qid iteration docid grade``.

Order of a ranking (:func:`ranked`): score descending, ties broken by docid *descending*, which is
how trec_eval orders tied documents. :func:`write_run` writes in this order, so the rank column of
a written run is exactly the order every evaluator (ours, trec_eval) will use.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Mapping

from rerankers.data.lines import iter_lines
from rerankers.errors import DataFormatError
from rerankers.utils.io import atomic_write

Run = Dict[str, Dict[str, float]]
Qrels = Dict[str, Dict[str, int]]


def ranked(docs: Mapping[str, float], depth: int | None = None) -> list[tuple[str, float]]:
    """``docs`` as ``[(docid, score), ...]`` in ranking order (score desc, then docid desc), cut at ``depth``."""
    items = sorted(docs.items(), key=lambda kv: kv[0], reverse=True)
    items.sort(key=lambda kv: kv[1], reverse=True)  # stable: ties keep docid-descending order
    return items if depth is None else items[:depth]


def truncate_run(run: Run, depth: int) -> Run:
    """The top ``depth`` documents of every query (ranking order as :func:`ranked`)."""
    if depth <= 0:
        raise ValueError(f"depth must be positive, got {depth}")
    return {qid: dict(ranked(docs, depth)) for qid, docs in run.items()}


def _parse_float(path, lineno: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(path, lineno, f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataFormatError(path, lineno, f"{what} {text!r} is not a finite number")
    return value


def _parse_int(path, lineno: int, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataFormatError(path, lineno, f"{what} {text!r} is not an integer") from None


def read_run(path: str | os.PathLike) -> Run:
    """Read a TREC run (``qid Q0 docid rank score tag``) or an MS MARCO run (``qid docid rank``).

    Raises DataFormatError (file and line) for a wrong number of columns, a non-numeric score or
    rank, a document listed twice for the same query (trec_eval refuses these too), mixed formats,
    or an empty file.
    """
    run: Run = {}
    ncols = None
    for lineno, line in iter_lines(path):
        fields = line.split()
        if len(fields) > 6:  # trec_eval ignores anything after the tag; so do we
            fields = fields[:6]
        if len(fields) not in (6, 3):
            raise DataFormatError(
                path, lineno,
                f"expected 6 columns 'qid Q0 docid rank score tag' (or 3, MS MARCO 'qid docid rank'), "
                f"found {len(fields)}: {line.strip()[:120]!r}")
        if ncols is None:
            ncols = len(fields)
        elif len(fields) != ncols:
            raise DataFormatError(path, lineno, f"found {len(fields)} columns where earlier lines have {ncols}")
        if ncols == 6:
            qid, _, docid, rank, score, _ = fields
            _parse_int(path, lineno, rank, "rank")
            value = _parse_float(path, lineno, score, "score")
        else:
            qid, docid, rank = fields
            value = -float(_parse_int(path, lineno, rank, "rank"))
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise DataFormatError(path, lineno, f"document {docid!r} appears twice for query {qid!r}")
        docs[docid] = value
    return run


def write_run(run: Mapping[str, Mapping[str, float]], path: str | os.PathLike, tag: str = "rerankers",
              depth: int | None = None) -> None:
    """Write ``run`` as a TREC run file, atomically.

    Per query, documents are sorted by :func:`ranked` (score descending, docid descending on ties)
    and ranked 1..n; queries appear in sorted qid order. Scores are written in Python's shortest
    round-trip form, so reading the file back gives exactly the same floats (and the same order).

    Args:
        run: ``{qid: {docid: score}}``.
        path: output file (parent folders are created).
        tag: the run tag (6th column); must not contain whitespace.
        depth: keep only the top ``depth`` documents per query.

    Raises DataFormatError (and leaves ``path`` untouched) for a qid or docid that is empty or
    contains whitespace: its line would not read back as the same run.
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag must be a non-empty word without spaces, got {tag!r}")
    with atomic_write(path) as f:
        for qid in sorted(run):
            for rank, (docid, score) in enumerate(ranked(run[qid], depth), start=1):
                if str(qid).split() != [str(qid)] or str(docid).split() != [str(docid)]:  # would not read back
                    raise DataFormatError(path, None, f"cannot write document {docid!r} of query {qid!r}: "
                                                      "ids in a TREC run must be words without whitespace")
                f.write(f"{qid} Q0 {docid} {rank} {float(score)!r} {tag}\n")


def read_qrels(path: str | os.PathLike) -> Qrels:
    """Read TREC qrels (``qid iteration docid grade``; whitespace-separated; graded integer grades).

    Lines whose first non-blank character is ``#`` are comments (trec_eval's ``qrels.test.with-comments``).

    Raises DataFormatError (file and line) for a wrong number of columns, a non-integer grade, a
    judgment repeated with a different grade, or an empty file.
    """
    qrels: Qrels = {}
    for lineno, line in iter_lines(path):
        if line.lstrip().startswith("#"):  # a comment line, as trec_eval reads qrels (a '#' inside a docno is text)
            continue
        fields = line.split()
        if len(fields) != 4:
            raise DataFormatError(path, lineno, f"expected 4 columns 'qid iteration docid grade', "
                                                f"found {len(fields)}: {line.strip()[:120]!r}")
        qid, _, docid, grade = fields
        value = _parse_int(path, lineno, grade, "relevance grade")
        docs = qrels.setdefault(qid, {})
        if docid in docs and docs[docid] != value:
            raise DataFormatError(path, lineno, f"document {docid!r} of query {qid!r} is judged twice "
                                                f"with different grades ({docs[docid]} and {value})")
        docs[docid] = value
    return qrels


def write_qrels(qrels: Mapping[str, Mapping[str, int]], path: str | os.PathLike) -> None:
    """Write qrels (``qid 0 docid grade``), atomically, in sorted qid and docid order."""
    with atomic_write(path) as f:
        for qid in sorted(qrels):
            for docid in sorted(qrels[qid]):
                f.write(f"{qid} 0 {docid} {int(qrels[qid][docid])}\n")


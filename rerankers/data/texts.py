"""Text inputs: queries (topics), corpora, and first-stage candidates that carry passage texts.

- Queries: ``qid<TAB>text`` TSV (TREC DL topics, MS MARCO ``queries.*.tsv``), or JSONL with an id
  field (``id``/``_id``/``qid``/``query_id``) and a text field (``text``/``query``/``title``).
- Corpora: MS MARCO ``collection.tsv`` (``pid<TAB>text``), or JSONL with an id field
  (``id``/``_id``/``docid``/``doc_id``/``pid``) and a text field (``text``/``contents``/``body``);
  an optional ``title`` is prepended (BEIR style).
- Candidates: a JSON list (or JSONL, one entry a line) of
  ``{"query": str, "hits": [{"qid", "docid", "rank", "score", "content"}, ...]}`` as written by
  rank_llm; gives queries, the first-stage run and the document texts in one file.

Every reader returns ``dict[id, str]`` (ids as strings) and raises DataFormatError naming the file
and line (or, inside a JSON list, the entry and hit) for malformed input, empty texts, texts that
are not strings (a list, a number: named by type, never read as empty or as their repr), ids that
are neither strings nor integers, and duplicate ids.
"""
from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path
from typing import Any, Collection, Dict, Iterator

from rerankers.data.lines import check_readable, iter_lines
from rerankers.data.trec import Run
from rerankers.errors import DataFormatError

Texts = Dict[str, str]

QUERY_ID_FIELDS = ("id", "_id", "qid", "query_id")
QUERY_TEXT_FIELDS = ("text", "query", "title")
DOC_ID_FIELDS = ("id", "_id", "docid", "doc_id", "pid")
DOC_TEXT_FIELDS = ("text", "contents", "body")


def _is_jsonl(path: Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.endswith((".jsonl", ".ndjson"))


def _pick(obj: dict, names: tuple[str, ...], path, lineno, what: str) -> Any:
    """The value of the first of ``names`` in ``obj``, checked: a text (``what`` ends with "text") must be a
    string, an id a string or an integer; DataFormatError naming the field and the type found."""
    for name in names:
        if name in obj and obj[name] is not None:
            value = obj[name]
            if what.endswith("text"):
                return _checked_text(value, path, lineno, f"{what} field {name!r}")
            return _checked_id(value, path, lineno, f"{what} field {name!r}")
    raise DataFormatError(path, lineno, f"missing {what} field (one of {', '.join(map(repr, names))})")


def _described(value: Any) -> str:
    """``a list: ['a', 'b']`` -- a JSON value's type and a short preview, for messages."""
    kind = {list: "a list", dict: "an object", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)
    shown = repr(value)
    return f"{kind}: {shown if len(shown) <= 60 else shown[:57] + '...'}"


def _checked_id(value: Any, path, lineno, what: str) -> str:
    """``value`` as an id string where it is a string or an integer; else DataFormatError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(path, lineno, f"{what} must be a string or an integer, found {_described(value)}")
    return str(value)


def _checked_text(value: Any, path, lineno, what: str) -> str:
    """``value`` where it is a string; else DataFormatError naming ``what`` and the type found."""
    if not isinstance(value, str):
        raise DataFormatError(path, lineno, f"{what} must be a string, found {_described(value)}")
    return value


def _iter_jsonl(path) -> Iterator[tuple[int, dict]]:
    for lineno, line in iter_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataFormatError(path, lineno, f"expected a JSON object, found {type(obj).__name__}")
        yield lineno, obj


def _iter_tsv_pairs(path, what: str) -> Iterator[tuple[int, str, str]]:
    for lineno, line in iter_lines(path):
        if "\t" not in line:
            raise DataFormatError(path, lineno, f"expected '{what}id<TAB>text', found no tab: {line[:120]!r}")
        ident, text = line.split("\t", 1)
        yield lineno, ident.strip(), text


def _add(store: Texts, path, lineno, ident: str, text: str, what: str) -> None:
    if not ident:
        raise DataFormatError(path, lineno, f"empty {what} id")
    if not text.strip():
        raise DataFormatError(path, lineno, f"{what} {ident!r} has an empty text")
    if ident in store:
        raise DataFormatError(path, lineno, f"{what} id {ident!r} appears twice")
    store[ident] = text


def read_queries(path: str | os.PathLike) -> Texts:
    """Read queries: ``qid<TAB>text`` TSV (TREC topics, MS MARCO queries) or JSONL (see module doc)."""
    p = check_readable(path)
    queries: Texts = {}
    if _is_jsonl(p):
        for lineno, obj in _iter_jsonl(p):
            qid = _pick(obj, QUERY_ID_FIELDS, p, lineno, "query id")
            text = _pick(obj, QUERY_TEXT_FIELDS, p, lineno, "query text")
            _add(queries, p, lineno, qid, text.strip(), "query")
    else:
        for lineno, qid, text in _iter_tsv_pairs(p, "q"):
            _add(queries, p, lineno, qid, text.strip(), "query")
    return queries


def read_corpus(path: str | os.PathLike, ids: Collection[str] | None = None) -> Texts:
    """Read a corpus: MS MARCO ``collection.tsv`` or JSONL (see module doc).

    Args:
        path: the corpus file (``.gz`` accepted).
        ids: if given, keep only these document ids (saves memory on a large collection); the
            whole file is still checked for well-formed lines.
    """
    p = check_readable(path)
    docs: Texts = {}
    keep = set(ids) if ids is not None else None
    if _is_jsonl(p):
        for lineno, obj in _iter_jsonl(p):
            docid = _pick(obj, DOC_ID_FIELDS, p, lineno, "document id")
            text = _pick(obj, DOC_TEXT_FIELDS, p, lineno, "document text").strip()
            title = _checked_text(obj.get("title") or "", p, lineno, "document field 'title'").strip()
            if title:
                text = f"{title} {text}".strip()
            if keep is None or docid in keep:
                _add(docs, p, lineno, docid, text, "document")
    else:
        for lineno, docid, text in _iter_tsv_pairs(p, "doc"):
            if keep is None or docid in keep:
                _add(docs, p, lineno, docid, text.strip(), "document")
    return docs


def _candidate_entries(p: Path) -> Iterator[tuple[str, int | None, dict]]:
    """Yield ``(location, lineno, entry)`` for each candidates entry of a JSON list or JSONL file."""
    if _is_jsonl(p):
        for lineno, obj in _iter_jsonl(p):
            yield "", lineno, obj
        return
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rt", encoding="utf-8-sig") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(p, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise DataFormatError(p, None, f"not valid UTF-8 text ({e.reason})") from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise DataFormatError(p, None, f"cannot read file: {e}") from None
    if not isinstance(data, list):
        raise DataFormatError(p, None, "expected a JSON list of {\"query\", \"hits\"} entries, "
                                       f"found a JSON {type(data).__name__}")
    if not data:
        raise DataFormatError(p, None, "the candidates list is empty")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise DataFormatError(p, None, f"entry {i}: expected an object, found {type(entry).__name__}")
        yield f"entry {i}: ", None, entry


def _hit_number(p: Path, lineno: int | None, where: str, hit: dict, field: str) -> float:
    """``hit[field]`` as a finite float, else DataFormatError naming the file, line/entry and hit."""
    try:
        value = float(hit[field])
    except (TypeError, ValueError):
        raise DataFormatError(p, lineno, f"{where}{field} {hit[field]!r} is not a number") from None
    if not math.isfinite(value):
        raise DataFormatError(p, lineno, f"{where}{field} {hit[field]!r} is not a finite number")
    return value


def read_candidates(path: str | os.PathLike) -> tuple[Texts, Run, Texts]:
    """Read first-stage candidates with texts (rank_llm's JSON list, or JSONL of the same entries).

    Returns:
        ``(queries, run, docs)``: query texts by qid, the first-stage run ``{qid: {docid: score}}``
        (score from ``score``, or ``-rank`` where a hit has no score), and passage texts by docid
        (the first text seen for a docid wins).

    Raises DataFormatError naming the file and the line (JSONL) or the entry/hit index (JSON list)
    for missing fields, empty texts, hits of one entry with different qids, a qid appearing in two
    entries, or a docid listed twice for the same query.
    """
    p = check_readable(path)
    queries: Texts = {}
    run: Run = {}
    docs: Texts = {}
    for loc, lineno, entry in _candidate_entries(p):
        for field in ("query", "hits"):
            if field not in entry:
                raise DataFormatError(p, lineno, f"{loc}missing field {field!r}")
        query, hits = entry["query"], entry["hits"]
        if not _checked_text(query, p, lineno, f"{loc}'query'").strip():
            raise DataFormatError(p, lineno, f"{loc}'query' must be a non-empty string")
        if not isinstance(hits, list):
            raise DataFormatError(p, lineno, f"{loc}'hits' must be a list")
        qid = _checked_id(entry["qid"], p, lineno, f"{loc}'qid'") if entry.get("qid") is not None else None
        ranking: dict[str, float] = {}
        for j, hit in enumerate(hits):
            where = f"{loc}hit {j}: "
            if not isinstance(hit, dict):
                raise DataFormatError(p, lineno, f"{where}expected an object")
            for field in ("qid", "docid", "content"):
                if hit.get(field) is None and not (field == "qid" and qid is not None):
                    raise DataFormatError(p, lineno, f"{where}missing field {field!r}")
            hit_qid = _checked_id(hit["qid"], p, lineno, f"{where}'qid'") if hit.get("qid") is not None else qid
            if qid is None:
                qid = hit_qid
            elif hit_qid != qid:
                raise DataFormatError(p, lineno, f"{where}qid {hit_qid!r} differs from the entry's qid {qid!r}")
            docid = _checked_id(hit["docid"], p, lineno, f"{where}'docid'")
            content = _checked_text(hit["content"], p, lineno, f"{where}document {docid!r}: 'content'")
            if not content.strip():
                raise DataFormatError(p, lineno, f"{where}document {docid!r} has an empty 'content'")
            if hit.get("score") is not None:
                score = _hit_number(p, lineno, where, hit, "score")
            elif hit.get("rank") is not None:
                score = -_hit_number(p, lineno, where, hit, "rank")
            else:
                raise DataFormatError(p, lineno, f"{where}missing field 'score' (or 'rank')")
            if docid in ranking:
                raise DataFormatError(p, lineno, f"{where}document {docid!r} listed twice for query {qid!r}")
            ranking[docid] = score
            docs.setdefault(docid, content)
        if qid is None:
            raise DataFormatError(p, lineno, f"{loc}no hits and no 'qid': cannot tell which query this is")
        if qid in queries:
            raise DataFormatError(p, lineno, f"{loc}query {qid!r} appears in two entries")
        queries[qid] = query.strip()
        run[qid] = ranking
    return queries, run, docs

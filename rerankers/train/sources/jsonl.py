"""The ``jsonl`` kind: training JSONL, queries with positive and negative texts (and teacher scores).

Training JSONL, one object a line::

    {"qid": "q1", "query": "text", "positives": ["text", ...], "negatives": ["text", ...],
     "scores": {"positives": [9.1, ...], "negatives": [2.3, null, ...]}}

``qid`` (string or integer) and ``scores`` are optional, and so is one of the two lists. ``scores``
holds teacher scores for distillation (Margin-MSE): lists aligned with ``positives`` and
``negatives`` (same lengths; ``null`` for a text the teacher did not score; a side may be left out).

Without ``qid``, a query's id is :func:`~.base.text_id` of its text; lines of the same query (same
text, or same ``"qid"``) merge into one query.
"""
from __future__ import annotations

import math

from rerankers.data.texts import _iter_jsonl
from rerankers.errors import DataFormatError
from rerankers.train.sources.base import _Context, _Groups, _Loaded, _pair_queries, text_id


def _text_list(path: str, lineno: int, obj: dict, key: str) -> list[str]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise DataFormatError(path, lineno, f"'{key}' must be a list of texts, found {type(value).__name__}")
    out = []
    for i, text in enumerate(value):
        if not isinstance(text, str) or not text.strip():
            raise DataFormatError(path, lineno, f"'{key}'[{i}] must be a non-empty string, found {text!r:.60}")
        out.append(text.strip())
    return out


def _score_list(path: str, lineno: int, scores: dict, key: str, n: int) -> list[float | None]:
    if key not in scores or scores[key] is None:
        return [None] * n
    value = scores[key]
    if not isinstance(value, list) or len(value) != n:
        found = f"{len(value)} values" if isinstance(value, list) else type(value).__name__
        raise DataFormatError(path, lineno, f"'scores.{key}' must be a list of {n} numbers "
                                            f"(one per text of '{key}'), found {found}")
    out: list[float | None] = []
    for i, s in enumerate(value):
        if s is None:
            out.append(None)
        elif isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise DataFormatError(path, lineno, f"'scores.{key}'[{i}] {s!r:.40} is not a finite number (or null)")
        else:
            out.append(float(s))
    return out


def _load_jsonl(source: str, path: str, qrels_arg: str | None, ctx: _Context) -> _Loaded:
    groups, queries, texts = _Groups(), {}, {}
    first_line: dict[str, int] = {}
    teacher: dict[tuple[str, str], float] = {}
    for lineno, obj in _iter_jsonl(path):
        query = obj.get("query")
        if not isinstance(query, str) or not query.strip():
            raise DataFormatError(path, lineno, "'query' must be a non-empty string")
        query = query.strip()
        if "positives" not in obj and "negatives" not in obj:
            raise DataFormatError(path, lineno, "missing 'positives' and 'negatives' (lists of texts)")
        raw_qid = obj.get("qid")
        if raw_qid is None:
            qid = text_id(query, "q")
        elif isinstance(raw_qid, bool) or not isinstance(raw_qid, (str, int)) or not str(raw_qid).strip():
            raise DataFormatError(path, lineno, f"'qid' must be a non-empty string or an integer, found {raw_qid!r}")
        else:
            qid = str(raw_qid).strip()
        if qid in queries and queries[qid] != query:
            raise DataFormatError(path, lineno, f"query {qid!r} has another text than at line {first_line[qid]}")
        queries.setdefault(qid, query)
        first_line.setdefault(qid, lineno)
        scores = obj.get("scores") or {}
        if not isinstance(scores, dict):
            raise DataFormatError(path, lineno,
                                  "'scores' must be an object {\"positives\": [...], \"negatives\": [...]}")
        for key, positive in (("positives", True), ("negatives", False)):
            docs = _text_list(path, lineno, obj, key)
            for text, score in zip(docs, _score_list(path, lineno, scores, key, len(docs))):
                d = text_id(text, "d")
                texts.setdefault(d, text)
                groups.add(qid, d if positive else None, None if positive else d)
                if score is not None:
                    teacher.setdefault((qid, d), score)
    return _pair_queries(source, groups, queries, texts, path, teacher)

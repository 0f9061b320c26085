"""Kind detection: a ``--train`` value -> its kind (one of :data:`~.base.KINDS`) and its path or dataset id.

``KIND:PATH`` forces a kind. A file's kind comes from its name and first line: ``.json`` or a line
starting ``[`` or holding ``"hits"``: candidates; a JSON line with ``"query"`` and
``"positives"``/``"negatives"``: training JSONL; three tab-separated fields: text triples, or id
triples (an MS MARCO ``qid docid rank`` run when its first two lines rank 1 and 2 for one query); six
words (or ``Q0`` second): a TREC run. An ir_datasets id is irds-docpairs or irds-judged.
"""
from __future__ import annotations

import json
from pathlib import Path

from rerankers.data.datasets import dataset_entities, is_file_argument, resolve_dataset_id
from rerankers.data.lines import check_readable, iter_lines
from rerankers.errors import DataFormatError, UsageError
from rerankers.train.sources.base import KINDS


def _split_kind(source: str) -> tuple[str | None, str]:
    """``KIND:TARGET`` -> ``(KIND, TARGET)``; anything else (an existing path first) -> ``(None, source)``."""
    head, sep, rest = source.partition(":")
    if sep and head in KINDS and not Path(source).exists():
        return head, rest
    return None, source


def _msmarco_run_like(path: Path, first: list[str]) -> bool:
    """Three columns ``qid docid rank`` whose first two lines rank 1 and 2 for one query: an MS MARCO run."""
    if first[2] != "1":
        return False
    lines = iter_lines(path)
    try:
        next(lines)
        second = next(lines, (0, ""))[1].split()
    finally:
        lines.close()
    return len(second) == 3 and second[0] == first[0] and second[2] == "2"


def _file_kind(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith(".json"):
        return "candidates"
    lines = iter_lines(path)
    try:
        lineno, line = next(lines)
    finally:
        lines.close()
    text = line.strip()
    if text.startswith("["):
        return "candidates"
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
        if isinstance(obj, dict) and "hits" in obj:
            return "candidates"
        if isinstance(obj, dict) and "query" in obj and ("positives" in obj or "negatives" in obj):
            return "jsonl"
        raise DataFormatError(path, lineno, "cannot tell the kind of training source: a JSON line with neither 'hits' "
                                            "(candidates) nor 'query' + 'positives'/'negatives' (training JSONL)")
    tabs, words = line.split("\t"), line.split()
    if len(tabs) == 3 and len(words) == 3:
        return "run" if _msmarco_run_like(path, words) else "id-triples"
    if len(tabs) == 3:
        return "text-triples"
    if len(words) == 6 or (len(words) > 6 and words[1] == "Q0"):
        return "run"
    if len(words) == 4:
        hint = "it looks like qrels ('qid iteration docid grade'): give them as --train-qrels"
    elif len(tabs) == 2:
        hint = "it looks like queries or a corpus ('id<TAB>text'): give them as --queries / --corpus"
    else:
        hint = f"{len(tabs)} tab-separated fields, {len(words)} words"
    raise DataFormatError(path, lineno, f"cannot tell the kind of training source ({hint}); expected candidates "
                                        "(JSON), a TREC run, training JSONL, text triples or id triples; "
                                        f"KIND:PATH forces one of {', '.join(KINDS)}")


def detect_kind(source: str) -> tuple[str, str]:
    """``source`` -> ``(kind, target)``: the kind (one of :data:`KINDS`) and the file path or dataset id.

    Raises DataFormatError for a missing file or one of no known kind, UnknownDatasetError for a
    name that is neither a file nor an ir_datasets id, UsageError for a dataset with neither qrels
    nor docpairs.
    """
    kind, target = _split_kind(str(source))
    if kind is not None:
        if kind.startswith("irds-"):
            target = resolve_dataset_id(target)
        return kind, target
    if is_file_argument(target):
        return _file_kind(check_readable(target)), target
    dataset_id = resolve_dataset_id(target)
    provides = dataset_entities(dataset_id)
    if "docpairs" in provides and (dataset_id.rsplit("/", 1)[-1].startswith("triples") or "qrels" not in provides):
        return "irds-docpairs", dataset_id
    if "qrels" in provides:
        return "irds-judged", dataset_id
    raise UsageError(f"dataset {dataset_id!r} has neither qrels nor docpairs: it cannot be a training source")

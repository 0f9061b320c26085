"""A trained cross-encoder as the teacher of a distillation: its scores on the training candidates, as a run.

    rerank teacher --model runs/big/model --candidates dl20.json dl21.json --out runs/teacher.trec
    rerank prune --model runs/big/model --out runs/student --layers-keep 2          (or any smaller model)
    rerank train --backbone runs/student --train dl20.json dl21.json --train-qrels q20.txt q21.txt \\
        --teacher runs/teacher.trec --loss margin-mse --out runs/student-distilled

Every candidate of every query is scored (no depth cut), through the same path as ``rerank eval --model``
(:func:`rerankers.pipeline.rerank_with_model`); several candidates files are merged (a query found in
several keeps the union of its candidates). For one file, ``rerank eval --model M --candidates F --qrels Q
--depth D --output RUN`` with D at least the file's depth writes the same scores; this command needs no
judgments and takes several files. The run's qids and docids are those of the training sources, which is
what ``rerank train --teacher`` matches candidates by.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from rerankers.data.trec import Run

logger = logging.getLogger(__name__)

_ALL = 1 << 30  # a depth beyond any run: every candidate


def score_teacher_run(model: str | os.PathLike, out: str | os.PathLike, *,
                      candidates: Sequence[str | os.PathLike] = (), run: str | os.PathLike | None = None,
                      queries: str | None = None, corpus: str | os.PathLike | None = None,
                      dataset: str | None = None, device: str | None = None, dtype: str | None = None,
                      batch_tokens: int | None = None, tag: str | None = None) -> tuple[Run, dict[str, Any]]:
    """Score every candidate with the cross-encoder ``model`` and write the scores to ``out`` (a TREC run).

    Args:
        model: a saved cross-encoder folder or a preset name (the teacher).
        out: the teacher run to write (checked writable before the model is loaded).
        candidates: candidates files with texts (``--candidates``), merged; or else
        run, queries, corpus, dataset: a TREC run with its texts, as ``rerank eval`` takes them.
        device, dtype, batch_tokens: the scoring (:func:`rerankers.pipeline.rerank_with_model`).
        tag: the run tag (default ``teacher-<model folder name>``).

    Returns ``(run, throughput)``: the teacher scores ``{qid: {docid: score}}`` and the scoring speed.
    """
    from rerankers.data.inputs import load_rerank_inputs
    from rerankers.data.trec import write_run
    from rerankers.errors import UsageError
    from rerankers.pipeline import rerank_with_model
    from rerankers.utils.io import check_writable

    candidates = [str(c) for c in candidates]
    if bool(candidates) == bool(run):
        raise UsageError("rerank teacher: give the candidates to score: --candidates FILE [FILE ...], or --run FILE "
                         "with its texts (--queries/--corpus or --dataset), not both")
    tag = tag or f"teacher-{Path(str(model)).name.replace(' ', '_') or 'model'}"
    if tag.split() != [tag]:
        raise UsageError(f"--tag {tag!r}: a run tag must be one word without whitespace")
    if batch_tokens is not None and batch_tokens < 1:
        raise UsageError(f"--batch-tokens must be a positive number of tokens, got {batch_tokens}")
    check_writable(out)
    merged: Run = {}
    query_texts: dict[str, str] = {}
    doc_texts: dict[str, str] = {}
    sources = [dict(candidates=c) for c in candidates] or [dict(run=run, queries=queries, corpus=corpus,
                                                                dataset=dataset)]
    for source in sources:
        first_stage, q, d = load_rerank_inputs(**source, depth=_ALL)
        for qid, docs in first_stage.items():
            merged.setdefault(qid, {}).update({docid: 0.0 for docid in docs})
        query_texts.update(q)
        doc_texts.update(d)
    scores, speed = rerank_with_model(model, merged, query_texts, doc_texts, device=device, dtype=dtype,
                                      batch_tokens=batch_tokens, depth=None)
    write_run(scores, out, tag=tag)
    pairs = sum(map(len, scores.values()))
    logger.info("teacher run: %d queries, %d pairs scored by %s -> %s (%s pairs/s)", len(scores), pairs, model, out,
                speed.get("pairs/s"))
    return scores, speed

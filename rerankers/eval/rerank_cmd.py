"""The reranking step of ``rerank eval --model ...``: score first-stage candidates with a model.

Owned by the models work (issue 3) once it lands; until then reranking is not available. The CLI
(:func:`rerankers.cli.cmd_eval`) resolves the inputs itself (:func:`rerankers.cli.load_rerank_inputs`)
and calls :func:`rerank_with_model` exactly once.
"""
from __future__ import annotations

import argparse
from typing import Mapping

from rerankers.data.trec import Run


def rerank_with_model(args: argparse.Namespace, run: Run, queries: Mapping[str, str],
                      docs: Mapping[str, str]) -> tuple[Run, dict[str, float] | None]:
    """Rerank ``run`` with the model named by ``args.model``.

    Args:
        args: the parsed ``rerank eval`` arguments; the model-related ones are ``model`` (path or
            name), ``device`` (e.g. ``cpu``, ``cuda``; None = automatic), ``dtype`` (``float32``,
            ``bfloat16``, ``float16``; None = model default), ``batch_tokens`` (token budget per
            packed batch; None = default), ``depth`` (already applied to ``run``).
        run: first-stage candidates ``{qid: {docid: score}}``, already cut to the top ``depth``.
        queries: ``{qid: text}`` for every qid of ``run``.
        docs: ``{docid: text}`` for every docid of ``run``.

    Returns:
        ``(reranked_run, throughput)``: the model's scores ``{qid: {docid: score}}`` for the same
        pairs, and a dict of throughput figures to show next to the metrics (e.g.
        ``{"pairs/s": ..., "tokens/s": ...}``), or None.
    """
    raise NotImplementedError("reranking needs rerankers.models (issue 3)")

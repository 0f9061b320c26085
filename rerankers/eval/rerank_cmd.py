"""The reranking step of ``rerank eval --model ...``: score first-stage candidates with a model.

The CLI (:func:`rerankers.cli.cmd_eval`) resolves the inputs itself
(:func:`rerankers.cli.load_rerank_inputs`), calls :func:`rerank_with_model` exactly once, and
writes the returned run to ``--output`` (atomically, with the TREC writer).
"""
from __future__ import annotations

import argparse
import logging
from typing import Mapping

from rerankers.data.trec import Run
from rerankers.errors import ModelLoadingError

logger = logging.getLogger(__name__)

DEFAULT_BATCH_TOKENS = 16384



def rerank_with_model(args: argparse.Namespace, run: Run, queries: Mapping[str, str],
                      docs: Mapping[str, str]) -> tuple[Run, dict[str, float] | None]:
    """Rerank ``run`` with the model named by ``args.model``.

    Args:
        args: the parsed ``rerank eval`` arguments; the model-related ones are ``model`` (path or
            name), ``device`` (e.g. ``cpu``, ``cuda``; None = automatic), ``dtype`` (``float32``,
            ``bfloat16``, ``float16``; None = bf16 autocast on the GPU, fp32 on the CPU),
            ``batch_tokens`` (token budget per packed batch; None = 16384), ``depth`` (None =
            every candidate).
        run: the whole first-stage run ``{qid: {docid: score}}``.
        queries: ``{qid: text}`` for every qid of ``run``.
        docs: ``{docid: text}`` for at least every document in a query's top ``depth``.

    Returns:
        ``(reranked_run, throughput)``: model scores for each query's top ``depth``, the rest of
        the run kept below them in first-stage order (:meth:`Reranker.rerank_run`), and ``{"pairs/s": ..., "tokens/s": ...}`` (real, unpadded tokens; model time,
        device-synchronised).
    """
    from rerankers.reranker import Reranker

    batch_tokens = getattr(args, "batch_tokens", None) or DEFAULT_BATCH_TOKENS
    depth = getattr(args, "depth", None) or max((len(d) for d in run.values()), default=1)
    try:
        reranker = Reranker.from_pretrained(args.model, device=getattr(args, "device", None),
                                            dtype=getattr(args, "dtype", None), batch_tokens=batch_tokens)
    except (ModelLoadingError, ImportError) as e:  # ImportError: a preset's optional package is missing
        raise ModelLoadingError(f"--model {args.model}: {e}") from None
    reranked = reranker.rerank_run(run, queries, docs, depth=depth)
    st = reranker.last_stats
    logger.info("reranked %d pairs (%d tokens) in %.2fs: %.1f pairs/s, %.0f tokens/s (model only: %.1f pairs/s)",
                st.pairs, st.tokens, st.seconds, st.pairs_per_s, st.tokens_per_s, st.model_pairs_per_s)
    return reranked, {"pairs/s": round(st.model_pairs_per_s, 1), "tokens/s": round(st.model_tokens_per_s, 0)}

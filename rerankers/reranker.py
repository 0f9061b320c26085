"""The library API: ``Reranker.from_pretrained(name_or_path).rerank(query, docs)``.

Pairs are encoded with the model's template, sorted by length and batched by a token budget
(real tokens for packed backbones, padded tokens for T5), scored under ``torch.no_grad`` (bf16
autocast on the GPU by default) and put back in input order; a progress bar counts the pairs of a
long call (:mod:`rerankers.utils.progress`: a terminal only, off under ``rerank -q``). After each call, ``last_stats``
holds the throughput: pairs/s and real (unpadded) tokens/s, timed with device synchronisation.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch

from rerankers.data.batching import pack_encoded, restore_order, token_budget_batches
from rerankers.data.templates import check_not_empty, log_truncation
from rerankers.data.trec import ranked
from rerankers.errors import MissingDocumentsError, RerankersError, UnknownQueryError
from rerankers.models.cross_encoder import CrossEncoder
from rerankers.utils.progress import progress_bar

logger = logging.getLogger(__name__)
GRAPHS_ARG = "cuda_graphs (--cuda-graphs)"  # how errors name the option

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}




@dataclass
class RankedResult:
    """One reranked document: its id, text, model score and 1-based rank."""

    doc_id: Any
    text: str
    score: float
    rank: int


@dataclass
class Throughput:
    """Counts and timings of the last scoring call.

    pairs, tokens:        pairs scored, real (unpadded) tokens fed to the model
    seconds:              wall time of the whole call (tokenization included)
    model_seconds:        time in the model's forward passes (device synchronised)
    pairs_per_s, tokens_per_s:              over ``seconds``
    model_pairs_per_s, model_tokens_per_s:  over ``model_seconds``
    """

    pairs: int = 0
    tokens: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def model_pairs_per_s(self) -> float:
        return self.pairs / self.model_seconds if self.model_seconds > 0 else 0.0

    @property
    def model_tokens_per_s(self) -> float:
        return self.tokens / self.model_seconds if self.model_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        d = asdict(self)
        d.update(pairs_per_s=self.pairs_per_s, tokens_per_s=self.tokens_per_s,
                 model_pairs_per_s=self.model_pairs_per_s, model_tokens_per_s=self.model_tokens_per_s)
        return d


def parse_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise RerankersError(f"unknown dtype {dtype!r}; known: {', '.join(sorted(_DTYPES))}")
    return _DTYPES[key]


class Reranker:
    """Scores and reranks documents for queries with a :class:`CrossEncoder`.

    Args:
        model:         the cross-encoder (moved to ``device``, put in eval mode), or a saved folder / preset
                       name to load with :meth:`CrossEncoder.from_pretrained`
        device:        "cpu", "cuda", "cuda:1", ... (default: CUDA where available)
        dtype:         compute dtype: None -> bf16 autocast on the GPU, fp32 on the CPU;
                       bf16/fp16 -> autocast in that dtype; fp32 -> none
        batch_tokens:  token budget per batch (real tokens; padded ones for T5)
        max_pairs:     optional cap on pairs per batch
        chunk_pairs:   pairs encoded at a time (bounds host memory on big runs)
        quantize:      "int8": the backbone's Linear layers as int8 weights (in place; the head stays fp32;
                       :mod:`rerankers.models.quantize`); ``quantization`` then holds the sizes before/after
        cuda_graphs:   replay each batch's forward from a CUDA graph (:mod:`rerankers.models.graphed`: batches
                       padded to shape buckets, one capture per bucket; CUDA and packed backbones only). It
                       removes the host's per-launch cost, which sets the pace of Mamba's forward; batches are
                       then filled to ``batch_tokens - 1`` real tokens (a full one pads to the budget)
    """

    def __init__(self, model: CrossEncoder | str | os.PathLike, device: str | torch.device | None = None,
                 dtype: Any = None, batch_tokens: int = 16384, max_pairs: int | None = None, chunk_pairs: int = 32768,
                 quantize: str | None = None, cuda_graphs: bool = False):
        from rerankers.models.quantize import check_quantize, quantize_model

        check_quantize(quantize)
        if isinstance(model, (str, os.PathLike)):  # Reranker("runs/m") as well as Reranker.from_pretrained
            model = CrossEncoder.from_pretrained(model)
        elif not isinstance(model, CrossEncoder):
            raise RerankersError(f"Reranker: model must be a CrossEncoder, a saved folder or a preset name, "
                                 f"not {type(model).__name__}")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise RerankersError(f"device {device!r}: {e}") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RerankersError(f"device {device!r} asked for, but CUDA is not available")
        dt = parse_dtype(dtype)
        if dt is None:
            dt = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.autocast_dtype = dt if dt in (torch.bfloat16, torch.float16) else None
        for name, value in (("batch_tokens", batch_tokens), ("max_pairs", max_pairs), ("chunk_pairs", chunk_pairs)):
            if value is not None and value < 1:
                raise RerankersError(f"{name} must be positive, got {value}")
        if cuda_graphs:
            from rerankers.models.graphed import check_graphable

            check_graphable(model, self.device, self.autocast_dtype, GRAPHS_ARG)
            if batch_tokens < 2:
                raise RerankersError(f"{GRAPHS_ARG}: needs batch_tokens >= 2 (one token of padding), "
                                     f"got {batch_tokens}")
        self.quantization = quantize_model(model, quantize) if quantize else None
        self.model = model.to(self.device).eval()
        self.graphed = None
        if cuda_graphs:
            from rerankers.models.graphed import graphed_scorer_for

            self.graphed = graphed_scorer_for(self.model)
        self.batch_tokens = int(batch_tokens)
        self.max_pairs = max_pairs
        self.chunk_pairs = int(chunk_pairs)
        self.last_stats = Throughput()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: Any = None, **kwargs) -> "Reranker":
        """Load a saved cross-encoder folder, a sequence-classification checkpoint, or a preset name
        (``quantize="int8"``: see the class doc; a bad value fails before anything is loaded)."""
        from rerankers.models.quantize import check_quantize

        check_quantize(kwargs.get("quantize"))
        return cls(CrossEncoder.from_pretrained(name_or_path), device=device, dtype=dtype, **kwargs)

    # ---- scoring ------------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def score_pairs(self, queries: Sequence[str], docs: Sequence[str], ids: Sequence[Any] | None = None
                    ) -> list[float]:
        """Scores (N,) of aligned (query, doc) pairs, in input order. ``ids`` name pairs in errors."""
        check_not_empty(queries, docs, ids)
        t0 = time.perf_counter()
        stats = Throughput()
        scores: list[float] = []
        docs_cut = queries_cut = 0
        with progress_bar(total=len(queries), desc="rerank", unit="pair") as bar:
            for start in range(0, len(queries), self.chunk_pairs):
                sl = slice(start, start + self.chunk_pairs)
                enc = self.model.encode(queries[sl], docs[sl], None if ids is None else ids[sl], warn=False)
                docs_cut += len(enc.truncated)
                queries_cut += len(enc.queries_truncated)
                results = []
                budget = self.batch_tokens - 1 if self.graphed is not None else self.batch_tokens
                for idx in token_budget_batches(enc.lengths, budget, sort=True,
                                                padded=self.model.pads, max_pairs=self.max_pairs):
                    batch = pack_encoded(enc, idx)
                    if self.graphed is not None:  # padded to its bucket on the host: no device read
                        batch = self.graphed.pad(batch)
                    batch = batch.to(self.device)
                    self._sync()
                    m0 = time.perf_counter()
                    forward = self.model if self.graphed is None else self.graphed
                    if self.autocast_dtype is not None:
                        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                            s = forward(batch)
                    else:
                        s = forward(batch)
                    s = s.float().cpu()  # synchronises
                    stats.model_seconds += time.perf_counter() - m0
                    stats.tokens += batch.num_real_tokens
                    results.append((idx, s))
                    bar.update(len(idx))
                scores.extend(restore_order(len(enc.input_ids), results))
        log_truncation(docs_cut, queries_cut, len(docs), self.model.template)
        stats.pairs = len(queries)
        stats.seconds = time.perf_counter() - t0
        self.last_stats = stats
        return scores

    def score(self, query: str, docs: Sequence[str]) -> list[float]:
        """Scores of ``docs`` for one query, in input order."""
        if isinstance(docs, str):
            raise RerankersError("score: docs must be a list of texts, not one string (wrap it: [text])")
        return self.score_pairs([query] * len(docs), list(docs))

    def predict(self, pairs: Sequence[Sequence[str]]) -> list[float]:
        """Scores of ``[(query, doc), ...]`` pairs in input order (sentence-transformers' ``CrossEncoder.predict``)."""
        if isinstance(pairs, str) or any(isinstance(p, str) or len(p) != 2 for p in pairs):
            raise RerankersError("predict: pairs must be a list of (query, document) pairs")
        return self.score_pairs([p[0] for p in pairs], [p[1] for p in pairs])

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None,
             return_documents: bool = False) -> list[dict[str, Any]]:
        """``[{"corpus_id", "score"[, "text"]}, ...]`` by descending score, as sentence-transformers' ``rank``."""
        ranked = self.rerank(query, documents, top_k=top_k)
        return [{"corpus_id": r.doc_id, "score": r.score, **({"text": r.text} if return_documents else {})}
                for r in ranked]

    def rerank(self, query: str, docs: Sequence[str], top_k: int | None = None,
               doc_ids: Sequence[Any] | None = None) -> list[RankedResult]:
        """``docs`` ranked by score (descending; ties keep input order), the top ``top_k`` of them.

        ``doc_ids`` default to the documents' input positions (0, 1, ...).
        """
        if isinstance(docs, str):  # a str is a sequence of characters: never what was meant
            raise RerankersError("rerank: docs must be a list of texts, not one string (wrap it: [text])")
        docs = list(docs)
        if top_k is not None and top_k < 0:
            raise RerankersError(f"rerank: top_k must be >= 0, got {top_k}")
        if doc_ids is None:
            doc_ids = list(range(len(docs)))
        elif len(doc_ids) != len(docs):
            raise RerankersError(f"rerank: {len(doc_ids)} doc_ids for {len(docs)} documents")
        scores = self.score_pairs([query] * len(docs), docs, ids=doc_ids)
        order = sorted(range(len(docs)), key=lambda i: -scores[i])
        if top_k is not None:
            order = order[:top_k]
        return [RankedResult(doc_ids[i], docs[i], scores[i], r) for r, i in enumerate(order, start=1)]

    def rerank_run(self, run: Mapping[str, Mapping[str, float]], queries: Mapping[str, str],
                   docs: Mapping[str, str], depth: int = 100) -> dict[str, dict[str, float]]:
        """Rerank the top ``depth`` documents of every query of a first-stage ``run``.

        run: {qid: {docid: first-stage score}}; queries: {qid: text}; docs: {docid: text}.
        Returns {qid: {docid: score}}: the top ``depth`` (by first-stage rank, ties as in TREC
        order) get model scores; the documents beyond ``depth`` are kept, in their first-stage
        order, with scores below every reranked one.
        """
        if depth < 1:
            raise RerankersError(f"depth must be positive, got {depth}")
        missing_q = [q for q in run if q not in queries]
        if missing_q:
            raise UnknownQueryError(f"the run names {len(missing_q)} query id(s) absent from the queries "
                                    f"({len(queries)} known), e.g. {', '.join(map(repr, missing_q[:5]))}")
        heads = {qid: [d for d, _ in ranked(cands, depth)] for qid, cands in run.items()}
        missing_d = sorted({d for ds in heads.values() for d in ds if d not in docs})
        if missing_d:
            raise MissingDocumentsError(f"the run's top {depth} names {len(missing_d)} document id(s) absent from "
                                        f"the corpus ({len(docs)} documents), e.g. "
                                        f"{', '.join(map(repr, missing_d[:5]))}")
        qs, ds, ids, owners = [], [], [], []
        for qid, dids in heads.items():
            for d in dids:
                qs.append(queries[qid])
                ds.append(docs[d])
                ids.append(f"{qid}/{d}")
                owners.append((qid, d))
        scores = self.score_pairs(qs, ds, ids=ids)
        out: dict[str, dict[str, float]] = {qid: {} for qid in run}
        for (qid, d), s in zip(owners, scores):
            out[qid][d] = float(s)
        for qid, cands in run.items():
            rest = [d for d, _ in ranked(cands) if d not in out[qid]]
            floor = min(out[qid].values(), default=0.0)
            for i, d in enumerate(rest, start=1):
                out[qid][d] = floor - float(i)
        return out

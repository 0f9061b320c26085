"""Training sources: files and ir_datasets ids turned into :class:`~rerankers.train.examples.TrainQuery` lists.

:func:`load_training_queries` reads every ``--train`` source, in order, and returns the queries that
have at least one positive and one negative. Source kinds, detected from the file (its name and
first line) or the id; ``KIND:PATH`` (e.g. ``run:first_stage.tsv``) forces a kind:

=================  ===============================================================  ======================
kind               what                                                             also needs
=================  ===============================================================  ======================
``candidates``     rank_llm candidates, a JSON list (``.json``) or JSONL            qrels
                   (``.jsonl``) of ``{"query", "hits": [{"qid", "docid", "rank",
                   "score", "content"}]}``: queries, first-stage ranking and texts
``run``            a first-stage TREC run ``qid Q0 docid rank score tag``           qrels, corpus, queries
``jsonl``          one object a line, ``{"query", "positives", "negatives"}``       --
                   (see :mod:`.jsonl`)
``text-triples``   ``query<TAB>positive<TAB>negative`` (texts)                      --
``id-triples``     MS MARCO ``qid<TAB>pid+<TAB>pid-``                                corpus, queries
``irds-judged``    an ir_datasets id with qrels (``msmarco-passage/train/judged``):  ``negatives_run``
                   its qrels, queries and document store
``irds-docpairs``  an ir_datasets id with docpairs                                  --
                   (``msmarco-passage/train/triples-small``, any id whose last
                   part starts with ``triples``): its pairs, queries and documents
=================  ===============================================================  ======================

Ranked kinds (candidates, run, irds-judged), per query:

- positives: documents judged ``>= rel_level``, those the ranking holds first (in rank order), then
  the other judged-relevant ones (qrels order) whose text is known anywhere: this source, the other
  candidates sources of the call, or ``corpus``. A document with no text anywhere is skipped and
  counted. ``rel_level=None`` takes :func:`rerankers.eval.metrics.default_rel_level` of the qrels
  (TREC DL's grades 0-3: a positive is grade >= 2, as the track counts it).
- negatives: the ranking (score descending, trec_eval's tie order) cut at ``negatives_depth``
  ranks, judged-relevant documents left out; unjudged and judged-below-level documents stay.
- labels: the qrels grade (negative grades count as 0), 0.0 for an unjudged document.

Text kinds have no ids: a query's id is ``text_id(query, "q")``, a document's ``text_id(text, "d")``
(stable SHA-1 prefixes), and lines of the same query (same text, or same ``"qid"``) merge into one
query. Labels: 1.0 for a positive, 0.0 for a negative. ``negatives_depth`` applies to the ranked
kinds only. ID triples and docpairs group by qid the same way and keep their ids.

``teacher`` (a TREC run of teacher scores) sets :attr:`Candidate.teacher` on every candidate it
scores (by qid and docid), after everything else; its scores win over JSONL ``scores``.

Several sources concatenate in order; a query id met again in a later source merges into the first
(positives and negatives added where new, a document positive in one source never a negative), so
e.g. DL20's BM25 and SPLADE candidates give one query with both pools. The same id with another
query text is a UsageError.

Reporting: a query with no positive, no negative or no query text is dropped; each source logs at
most one warning (the counts, a few qids, and documents whose text is missing) and one info line
(queries, positives, negatives). Nothing left: TrainingDataError naming the sources. A malformed
line: DataFormatError naming the file and the line.

Layout: :mod:`.load` (:func:`load_training_queries`, the dispatcher: a loader per kind, dropping,
reporting, merging), :mod:`.detect` (:func:`detect_kind`), :mod:`.base` (the pieces every kind shares:
:func:`text_id`, the loader context, the per-query id groups), :mod:`.ranked` (positives and negatives of
the ranked kinds), one module per kind (:mod:`.candidates`, :mod:`.run`, :mod:`.jsonl`,
:mod:`.text_triples`, :mod:`.id_triples`, :mod:`.irds_judged`, :mod:`.irds_docpairs`) and
:mod:`.teacher_run` (the ``teacher`` run).
"""
from __future__ import annotations

from rerankers.train.sources.base import KINDS, TAKES_QRELS, text_id
from rerankers.train.sources.detect import detect_kind
from rerankers.train.sources.load import load_training_queries

__all__ = ["KINDS", "TAKES_QRELS", "detect_kind", "load_training_queries", "text_id"]

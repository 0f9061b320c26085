"""What every training source yields: queries with judged positives and ranked negatives.

A source (``rerankers.train.sources``) turns files or an ir_datasets id into a list of
:class:`TrainQuery`; the sampler (``rerankers.train.sampler``) draws groups of
``1 positive + (group_size - 1) negatives`` from them, deterministically from a seed. Nothing here
tokenizes: texts stay texts until the batch is built with the model's template.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Candidate:
    """One document of a training query.

    docid:   the document's id (str; a text hash where the source has no ids, e.g. text triples)
    text:    its text
    label:   graded relevance (the qrels grade; 1.0 for a positive of a triples/JSONL source,
             0.0 for a negative: unjudged or judged below the relevance level)
    teacher: a teacher's score for (query, document) (Margin-MSE distillation), or None
    """

    docid: str
    text: str
    label: float = 0.0
    teacher: float | None = None


@dataclass
class TrainQuery:
    """A query and its training candidates.

    qid:        the query id (str)
    text:       the query text
    positives:  judged relevant (grade >= the relevance level), in first-stage order where known
    negatives:  candidates to sample negatives from, in first-stage rank order where known
                (already cut to the negatives depth; judged-relevant documents excluded)
    source:     where it came from (a file path or dataset id), for messages
    """

    qid: str
    text: str
    positives: list[Candidate] = field(default_factory=list)
    negatives: list[Candidate] = field(default_factory=list)
    source: str = ""

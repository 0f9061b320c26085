"""Metric names: what users type (MRR@10, nDCG@10, R@100, trec_eval's P_10 ...) -> ranx names.

A metric is parsed into a :class:`MetricSpec` with a display name (``nDCG@10``), the ranx name
without relevance level (``ndcg@10``) and whether it is *binary* (counts documents with grade >=
the relevance level as relevant: MAP, MRR, P, R, R-prec, bpref, success, F1, hits) or *graded*
(nDCG: the grades are the gains, every positive grade counts, whatever the relevance level, as
in trec_eval).

Accepted spellings (case-insensitive), with ``k`` a cut-off:

====================  =======================  ===========================
ours                  trec_eval                ranx
====================  =======================  ===========================
MRR, MRR@k            recip_rank (uncut)       mrr, mrr@k
MAP, MAP@k            map, map_cut_k           map, map@k
nDCG, nDCG@k          ndcg, ndcg_cut_k         ndcg, ndcg@k
P@k                   P_k                      precision@k
R@k                   recall_k                 recall@k
Rprec                 Rprec                    r-precision
bpref                 bpref                    bpref
Success@k             success_k                hit_rate@k
F1@k                  -                        f1@k
Hits[@k]              num_rel_ret (a sum)      hits, hits@k
nDCG_Burges[@k]       -                        ndcg_burges (gain 2^g - 1)
====================  =======================  ===========================

Any explicit ranx relevance-level suffix (``map-l2``) is rejected: the level is an argument of
:func:`rerankers.eval.metrics.evaluate` so that all binary metrics of one table agree.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from rerankers.errors import UnknownMetricError

DEFAULT_METRICS = ("MRR@10", "nDCG@10", "nDCG@100", "MAP@1000", "R@100", "R@1000", "P@10")

# lower-cased base name -> (ranx base, display base, binary?)
_BASES: dict[str, tuple[str, str, bool]] = {}


def _register(names: tuple[str, ...], ranx: str, display: str, binary: bool) -> None:
    for n in names:
        _BASES[n.lower()] = (ranx, display, binary)


_register(("mrr", "recip_rank", "rr"), "mrr", "MRR", True)
_register(("map", "ap", "map_cut"), "map", "MAP", True)
_register(("ndcg", "ndcg_cut"), "ndcg", "nDCG", False)
_register(("p", "precision", "p_"), "precision", "P", True)
_register(("r", "recall"), "recall", "R", True)
_register(("rprec", "r-prec", "r-precision", "r_precision"), "r-precision", "Rprec", True)
_register(("bpref",), "bpref", "bpref", True)
_register(("success", "hit_rate", "hitrate"), "hit_rate", "Success", True)
_register(("f1", "set_f"), "f1", "F1", True)
_register(("hits", "num_rel_ret"), "hits", "Hits", True)
_register(("ndcg_burges",), "ndcg_burges", "nDCG_Burges", False)

_NEEDS_K = {"precision", "recall", "hit_rate"}  # ranx would silently use the whole ranking; trec_eval has no uncut P/R


@dataclass(frozen=True)
class MetricSpec:
    """One metric: ``display`` (table header), ``ranx`` (ranx name without ``-l``), ``binary``."""

    display: str
    ranx: str
    binary: bool

    def ranx_name(self, rel_level: int) -> str:
        """The ranx metric string, with the ``-lN`` suffix for binary metrics."""
        return f"{self.ranx}-l{rel_level}" if self.binary else self.ranx


def known_metrics() -> str:
    """A short human-readable list of accepted metric names (for error messages)."""
    return ("MRR[@k], MAP[@k], nDCG[@k], P@k, R@k, Rprec, bpref, Success@k, F1[@k], Hits[@k], "
            "nDCG_Burges[@k] (also trec_eval names: recip_rank, map_cut_k, ndcg_cut_k, P_k, "
            "recall_k, success_k, and ranx names: ndcg@10, recall@100, precision@10, hit_rate@10 ...)")


_PATTERN = re.compile(r"^(?P<base>[a-z][a-z0-9_\-]*?)(?:(?:@|_)(?P<k>\d+))?$")


def parse_metric(name: str) -> MetricSpec:
    """Parse one metric name (see the module table); raise UnknownMetricError if not recognised."""
    raw = name.strip()
    low = raw.lower()
    if re.search(r"-l\d+$", low):
        raise UnknownMetricError(f"metric {raw!r}: give the relevance level with --rel-level "
                                 "(rel_level=...) instead of a '-lN' suffix")
    m = _PATTERN.match(low)
    if not m or m.group("base") not in _BASES:
        raise UnknownMetricError(f"unknown metric {raw!r}; known metrics: {known_metrics()}")
    base, k = m.group("base"), m.group("k")
    ranx, display, binary = _BASES[base]
    if k is not None and int(k) <= 0:
        raise UnknownMetricError(f"metric {raw!r}: the cut-off must be a positive integer")
    if k is None and (ranx in _NEEDS_K or base in ("map_cut", "ndcg_cut")):
        raise UnknownMetricError(f"metric {raw!r} needs a cut-off, e.g. {display}@10")
    if ranx == "r-precision" and k is not None:
        raise UnknownMetricError(f"metric {raw!r}: Rprec takes no cut-off")
    if k is None:
        return MetricSpec(display, ranx, binary)
    return MetricSpec(f"{display}@{k}", f"{ranx}@{k}", binary)


def parse_metrics(names) -> list[MetricSpec]:
    """Parse a list of names (comma-separated items are split); duplicates are dropped, order kept."""
    specs: list[MetricSpec] = []
    for item in names:
        for name in str(item).split(","):
            if name.strip():
                spec = parse_metric(name)
                if spec not in specs:
                    specs.append(spec)
    if not specs:
        raise UnknownMetricError(f"no metric given; known metrics: {known_metrics()}")
    return specs

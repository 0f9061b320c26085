"""Errors raised by evaluation: unknown metric names, runs that cannot be evaluated."""
from rerankers.utils.errors import RerankersError


class UnknownMetricError(RerankersError, ValueError):
    """A metric name that neither our aliases nor ranx know."""


class EvaluationError(RerankersError, ValueError):
    """A run and qrels that cannot be evaluated together (e.g. no query in common)."""

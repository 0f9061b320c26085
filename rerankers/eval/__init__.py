"""Evaluation: trec_eval-compatible metrics through ranx, significance tests, reports."""
from rerankers.eval.metric_names import DEFAULT_METRICS, parse_metric, parse_metrics
from rerankers.eval.metrics import EvalResult, default_rel_level, evaluate
from rerankers.eval.report import Report, ReportRow
from rerankers.eval.significance import compare_to_baseline, paired_p_value

__all__ = ["DEFAULT_METRICS", "EvalResult", "Report", "ReportRow", "compare_to_baseline", "default_rel_level",
           "evaluate", "paired_p_value", "parse_metric", "parse_metrics"]

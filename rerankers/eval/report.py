"""Reports of several runs: means, significance against the first run, terminal/Markdown/JSON output.

The first row is the baseline. A value marked ``^`` (``v``) is significantly higher (lower) than
the baseline's under the chosen paired test at ``p < max_p``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rerankers.eval.metrics import EvalResult
from rerankers.eval.significance import compare_to_baseline
from rerankers.utils.io import atomic_write

_TEST_NAMES = {"student": "paired t-test", "fisher": "Fisher randomization test"}


@dataclass
class ReportRow:
    """One evaluated run: a name, its metrics, p-values against the baseline, extra columns."""

    name: str
    result: EvalResult
    source: str | None = None
    p_values: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"pairs/s": 812.5, "tokens/s": 9.1e4}


@dataclass
class Report:
    """A comparison table of runs evaluated on the same qrels (first row = baseline)."""

    rows: list[ReportRow]
    metrics: list[str]
    test: str = "student"
    max_p: float = 0.05
    qrels: str | None = None

    @classmethod
    def build(cls, rows: Sequence[ReportRow], test: str = "student", max_p: float = 0.05,
              qrels: str | None = None, **test_kwargs) -> "Report":
        """Compute every row's p-values against ``rows[0]`` and assemble the report."""
        rows = list(rows)
        if not rows:
            raise ValueError("a report needs at least one run")
        base = rows[0].result.per_query
        for row in rows[1:]:
            row.p_values = compare_to_baseline(base, row.result.per_query, test, **test_kwargs)
        return cls(rows=rows, metrics=list(rows[0].result.means), test=test, max_p=max_p, qrels=qrels)

    # ------------------------------------------------------------------ rendering
    def _marker(self, row: ReportRow, metric: str) -> str:
        p = row.p_values.get(metric)
        if p is None or p >= self.max_p:
            return ""
        base = self.rows[0].result.means[metric]
        return "^" if row.result.means.get(metric, base) > base else "v"

    def _extra_keys(self) -> list[str]:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row.extra if k not in keys]
        return keys

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        extra = self._extra_keys()
        header = ["run", "queries"] + self.metrics + extra
        body = []
        for row in self.rows:
            cells = [row.name, str(len(row.result.qids))]
            for m in self.metrics:
                v = row.result.means.get(m)
                cells.append("-" if v is None else f"{v:.4f}{self._marker(row, m)}")
            for k in extra:
                v = row.extra.get(k)
                cells.append("-" if v is None else (f"{v:,.1f}" if isinstance(v, float) else str(v)))
            body.append(cells)
        return header, body

    def footnote(self) -> str:
        """What the markers and the relevance level mean."""
        levels = sorted({r.result.rel_level for r in self.rows})
        lvl = "/".join(map(str, levels))
        text = f"Binary metrics count grade >= {lvl} as relevant; nDCG uses the graded judgments."
        if len(self.rows) > 1:
            text += (f" ^/v: significantly higher/lower than the first row ({_TEST_NAMES.get(self.test, self.test)},"
                     f" p < {self.max_p:g}).")
        return text

    def to_table(self) -> str:
        """A plain-text table for the terminal."""
        header, body = self._cells()
        widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
        fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body]
        return "\n".join(lines) + "\n" + self.footnote() + "\n"

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table."""
        header, body = self._cells()
        esc = lambda c: c.replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(map(esc, header)) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(map(esc, r)) + " |" for r in body]
        return "\n".join(lines) + "\n\n" + self.footnote() + "\n"

    def to_dict(self, per_query: bool = True) -> dict:
        """A JSON-serialisable dict: settings, and per run its means, p-values, extras, per-query scores."""
        return {
            "qrels": self.qrels,
            "metrics": self.metrics,
            "test": self.test,
            "max_p": self.max_p,
            "baseline": self.rows[0].name,
            "runs": [{
                "name": r.name,
                "source": r.source,
                "rel_level": r.result.rel_level,
                "num_queries": len(r.result.qids),
                "means": r.result.means,
                "p_values": r.p_values,
                "significant": {m: self._marker(r, m) or None for m in r.p_values},
                "extra": r.extra,
                "dropped_queries": r.result.dropped_qids,
                "missing_queries": r.result.missing_qids,
                **({"per_query": r.result.per_query} if per_query else {}),
            } for r in self.rows],
        }

    def to_json(self, per_query: bool = True) -> str:
        return json.dumps(self.to_dict(per_query), indent=2, sort_keys=False) + "\n"

    def render(self, fmt: str = "table") -> str:
        """``fmt``: ``table``, ``markdown`` or ``json`` (JSON without per-query scores)."""
        if fmt == "table":
            return self.to_table()
        if fmt == "markdown":
            return self.to_markdown()
        if fmt == "json":
            return self.to_json(per_query=False)
        raise ValueError(f"unknown report format {fmt!r} (table, markdown, json)")

    def save(self, folder: str | os.PathLike) -> list[Path]:
        """Write ``report.txt``, ``report.md``, ``report.json`` (with per-query scores) and
        ``per_query.tsv`` (run, metric, qid, score) into ``folder``, atomically; return the paths."""
        folder = Path(folder)
        outputs = {"report.txt": self.to_table(), "report.md": self.to_markdown(), "report.json": self.to_json()}
        paths = []
        for name, text in outputs.items():
            with atomic_write(folder / name) as f:
                f.write(text)
            paths.append(folder / name)
        with atomic_write(folder / "per_query.tsv") as f:
            f.write("run\tmetric\tqid\tscore\n")
            for r in self.rows:
                for m, scores in r.result.per_query.items():
                    for q, v in scores.items():
                        f.write(f"{r.name}\t{m}\t{q}\t{v:.6f}\n")
        paths.append(folder / "per_query.tsv")
        return paths

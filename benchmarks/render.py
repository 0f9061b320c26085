"""Regenerate BENCHMARKS.md's `rerank bench` section from the committed results (never hand-copied).

    python benchmarks/render.py [benchmarks/results] [BENCHMARKS.md]

Every ``bench_<mode>.json`` under the results folder (sorted: train, infer, scaling, profile, then by
folder) becomes one subsection with its card, command, checks, table and plot; the rest of
BENCHMARKS.md is left as it is (rerankers.bench.report.render_into).
"""
from __future__ import annotations

import sys
from pathlib import Path

from rerankers.bench.report import TABLES, render_into

ORDER = {mode: i for i, mode in enumerate(TABLES)}


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[1]
    results = Path(argv[0]) if argv else root / "benchmarks" / "results"
    markdown = Path(argv[1]) if len(argv) > 1 else root / "BENCHMARKS.md"
    files = sorted(results.rglob("bench_*.json"),
                   key=lambda p: (ORDER.get(p.stem.removeprefix("bench_"), 99), str(p.parent)))
    if not files:
        sys.stderr.write(f"render: no bench_*.json under {results}\n")
        return 2
    render_into(files, markdown)
    sys.stdout.write(f"{markdown}: {len(files)} results from {results}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

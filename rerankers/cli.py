"""The ``rerank`` command line: thin argument parsing around library functions.

    rerank eval --run bm25.trec [more.trec ...] --qrels dl19|FILE [--metrics ...] [--save-report DIR]
    rerank eval --model PATH --candidates cands.json --qrels FILE        (first stage vs reranked)
    rerank retrieve --corpus collection.tsv --queries queries.tsv --output bm25.trec
    rerank demo --out demo_out

User errors (bad files, unknown names) end as one line ``rerank: error: ...`` with exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

from rerankers.data.datasets import load_dataset_docs, load_dataset_queries, resolve_qrels, resolve_queries
from rerankers.data.texts import read_candidates, read_corpus
from rerankers.data.trec import Run, read_run, truncate_run, write_run
from rerankers.eval.metric_names import DEFAULT_METRICS
from rerankers.errors import RerankersError, UsageError

logger = logging.getLogger("rerankers.cli")



# ---------------------------------------------------------------------------------------- eval
def _add_eval_args(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("runs and judgments")
    src.add_argument("--run", nargs="+", metavar="FILE", default=[],
                     help="TREC run file(s) to evaluate; the first is the baseline of the significance tests")
    src.add_argument("--qrels", metavar="FILE|NAME",
                     help="qrels file, or a dataset: dl19, dl20, msmarco-dev, or an ir_datasets id")
    src.add_argument("--dataset", metavar="ID",
                     help="dataset (short name or ir_datasets id) giving qrels, and queries/documents for reranking")
    met = p.add_argument_group("metrics and report")
    met.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), metavar="M",
                     help="metric names (default: %(default)s); also trec_eval (ndcg_cut_10) and ranx (ndcg@10) names")
    met.add_argument("--rel-level", type=int, default=None, metavar="N",
                     help="binary metrics count grade >= N as relevant (default: 2 for graded qrels with "
                          "grades above 1, such as TREC DL, else 1)")
    met.add_argument("--missing-as-zero", action="store_true",
                     help="count judged queries missing from a run as 0 (trec_eval -c); default: leave them out")
    met.add_argument("--test", choices=("student", "fisher"), default="student",
                     help="paired significance test against the first run (default: %(default)s)")
    met.add_argument("--max-p", type=float, default=0.05, help="significance level (default: %(default)s)")
    met.add_argument("--format", choices=("table", "markdown", "json"), default="table", help="output format")
    met.add_argument("--save-report", metavar="DIR", help="also write report.{txt,md,json} and per_query.tsv here")
    rr = p.add_argument_group("reranking (with --model)")
    rr.add_argument("--model", metavar="PATH_OR_NAME", help="rerank the first-stage run with this cross-encoder")
    rr.add_argument("--candidates", metavar="FILE",
                    help="first-stage candidates with texts (JSON list or JSONL of {query, hits[...]})")
    rr.add_argument("--corpus", metavar="FILE", help="document texts (collection.tsv or JSONL)")
    rr.add_argument("--queries", metavar="FILE|NAME", help="query texts (qid<TAB>text, JSONL, or a dataset name)")
    rr.add_argument("--depth", type=int, default=100, help="rerank the top DEPTH candidates (default: %(default)s)")
    rr.add_argument("--output", metavar="FILE", help="write the reranked run here (TREC format)")
    rr.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    rr.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"), help="model dtype")
    rr.add_argument("--batch-tokens", type=int, default=None, help="token budget of one packed batch")


def _run_names(paths: Sequence[str]) -> list[str]:
    """Short distinct names for run files: the file stem, with parent folders where stems repeat."""
    names = [Path(p).stem for p in paths]
    depth = 1
    while len(set(names)) < len(names) and depth < 4:
        depth += 1
        names = ["/".join(Path(p).with_suffix("").parts[-depth:]) for p in paths]
    return names


def _missing(needed, have: Mapping, what: str, source: str) -> None:
    absent = [x for x in needed if x not in have]
    if absent:
        raise UsageError(f"{len(absent)} {what} have no text in {source} (e.g. {', '.join(map(str, absent[:3]))})")


def load_rerank_inputs(args: argparse.Namespace) -> tuple[Run, dict[str, str], dict[str, str]]:
    """Resolve the first-stage run, query texts and the texts of its top ``--depth`` documents.

    Sources, in order of preference: queries from ``--queries`` (file or dataset name), else
    ``--candidates``, else ``--dataset``; documents from ``--corpus``, else ``--candidates``, else
    ``--dataset`` (ir_datasets document store). Only the texts the run needs are kept.

    Returns:
        ``(run, queries, docs)``: the whole first-stage ``run`` ``{qid: {docid: score}}`` (documents
        beyond ``depth`` stay in it, ranked below the reranked ones, so deep metrics such as
        R@1000 keep their meaning); ``queries`` ``{qid: text}`` for every query and ``docs``
        ``{docid: text}`` for every document in a query's top ``depth``.
    """
    if args.depth is not None and args.depth <= 0:
        raise UsageError(f"--depth must be positive, got {args.depth}")
    cand_queries = cand_docs = None
    if args.candidates:
        cand_queries, cand_run, cand_docs = read_candidates(args.candidates)
    if args.run:
        run = read_run(args.run[0])
    elif args.candidates:
        run = cand_run
    else:
        raise UsageError("--model needs a first-stage run: --run FILE or --candidates FILE")
    head = truncate_run(run, args.depth)
    qids = sorted(run)
    docids = sorted({d for docs in head.values() for d in docs})

    if args.queries:
        all_queries, qsource = resolve_queries(args.queries)
    elif cand_queries is not None:
        all_queries, qsource = cand_queries, args.candidates
    elif args.dataset:
        all_queries, qsource = load_dataset_queries(args.dataset), args.dataset
    else:
        raise UsageError("reranking needs query texts: --queries, --candidates or --dataset")
    _missing(qids, all_queries, "queries of the run", qsource)
    queries = {q: all_queries[q] for q in qids}

    if args.corpus:
        docs, dsource = read_corpus(args.corpus, ids=set(docids)), args.corpus
    elif cand_docs is not None:
        docs, dsource = cand_docs, args.candidates
    elif args.dataset:
        store, dsource = load_dataset_docs(args.dataset), args.dataset
        try:
            docs = store.get_many(docids)
        except KeyError as e:
            raise UsageError(f"document {e.args[0]!r} of the run is not in {dsource}") from None
    else:
        raise UsageError("reranking needs document texts: --corpus, --candidates or --dataset")
    _missing(docids, docs, "documents of the run", dsource)
    docs = {d: docs[d] for d in docids}
    logger.info("reranking %d queries x <= %d candidates (%d distinct documents)", len(qids), args.depth, len(docids))
    return run, queries, docs


def cmd_eval(args: argparse.Namespace) -> int:
    """``rerank eval``: evaluate runs (and a reranked run with ``--model``), print the table."""
    from rerankers.eval.metrics import evaluate
    from rerankers.eval.report import Report, ReportRow

    if not args.qrels and not args.dataset:
        raise UsageError("give the judgments: --qrels FILE|NAME or --dataset ID")
    if not args.run and not args.candidates:
        raise UsageError("nothing to evaluate: give --run FILE [FILE ...] (or --candidates with --model)")
    if args.run and not args.model and (args.candidates or args.corpus):
        what = "--candidates" if args.candidates else "--corpus"
        raise UsageError(f"{what} gives texts to rerank with; it needs --model (or drop it to evaluate --run alone)")
    if not 0.0 < args.max_p < 1.0:
        raise UsageError(f"--max-p must be a significance level between 0 and 1, got {args.max_p:g}")
    qrels, qrels_name = resolve_qrels(args.qrels or args.dataset)

    entries: list[tuple[str, str, Run, dict]] = []  # (name, source, run, extra)
    for name, path in zip(_run_names(args.run), args.run):
        entries.append((name, path, read_run(path), {}))
    if args.model:
        from rerankers.eval.rerank_cmd import rerank_with_model

        run, queries, docs = load_rerank_inputs(args)
        base_name, base_source = (entries[0][0], entries[0][1]) if entries else (Path(args.candidates).stem,
                                                                                  args.candidates)
        if not entries:
            entries.append((base_name, base_source, run, {}))
        reranked, throughput = rerank_with_model(args, run, queries, docs)
        if args.output:
            write_run(reranked, args.output, tag=Path(str(args.model)).name.replace(" ", "_") or "rerankers")
            logger.info("wrote the reranked run to %s", args.output)
        name = f"{base_name} >> {Path(str(args.model)).name}@{args.depth}"
        entries.insert(1, (name, args.output or str(args.model), reranked, dict(throughput or {})))
    elif args.candidates and not args.run:
        entries.append((Path(args.candidates).stem, args.candidates, read_candidates(args.candidates)[1], {}))

    rows = [ReportRow(name=name, source=src, extra=extra,
                      result=evaluate(run, qrels, args.metrics, rel_level=args.rel_level,
                                      missing_as_zero=args.missing_as_zero, run_name=src, qrels_name=qrels_name))
            for name, src, run, extra in entries]
    report = Report.build(rows, test=args.test, max_p=args.max_p, qrels=qrels_name)
    sys.stdout.write(report.render(args.format))
    if args.save_report:
        paths = report.save(args.save_report)
        logger.info("report written to %s", ", ".join(map(str, paths)))
    return 0


# ------------------------------------------------------------------------------------ retrieve
def _add_retrieve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", required=True, metavar="FILE", help="collection.tsv (pid<TAB>text) or JSONL")
    p.add_argument("--queries", required=True, metavar="FILE|NAME", help="queries (qid<TAB>text) or a dataset name")
    p.add_argument("--output", required=True, metavar="FILE", help="the TREC run to write")
    p.add_argument("--k", type=int, default=1000, help="documents per query (default: %(default)s)")
    p.add_argument("--backend", choices=("bm25s", "pyserini"), default="bm25s",
                   help="bm25s (embedded, default) or pyserini (Lucene; pip install 'rerankers[pyserini]')")
    p.add_argument("--k1", type=float, default=0.9, help="BM25 k1 (default: %(default)s, Anserini's)")
    p.add_argument("--b", type=float, default=0.4, help="BM25 b (default: %(default)s, Anserini's)")
    p.add_argument("--tag", default=None, help="run tag (default: bm25)")


def cmd_retrieve(args: argparse.Namespace) -> int:
    """``rerank retrieve``: BM25 over a corpus, written as a TREC run."""
    from rerankers.retrieval import BM25Config, bm25_retrieve

    tag = args.tag or f"bm25-{args.backend}"
    if tag.split() != [tag]:  # checked before retrieval, which may take long
        raise UsageError(f"--tag {tag!r}: a run tag must be one word without whitespace")
    corpus = read_corpus(args.corpus)
    queries, _ = resolve_queries(args.queries)
    config = BM25Config(k1=args.k1, b=args.b, backend=args.backend)
    run = bm25_retrieve(corpus, queries, k=args.k, config=config)
    write_run(run, args.output, tag=tag)
    logger.info("wrote %d queries x <= %d documents to %s", len(run), args.k, args.output)
    return 0


# ---------------------------------------------------------------------------------------- demo
def _add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--k", type=int, default=100, help="BM25 candidates per query (default: %(default)s)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="a folder with queries.tsv, collection.tsv, qrels.txt (default: the bundled sample)")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table", help="output format")
    p.add_argument("--model", default=None, metavar="PATH_OR_NAME",
                   help="a trained cross-encoder to rerank the BM25 candidates with (default: BM25 only)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                   help="model dtype (default: bf16 autocast on the GPU, fp32 on the CPU)")


def cmd_demo(args: argparse.Namespace) -> int:
    """``rerank demo``: BM25 -> (rerank) -> evaluate on the bundled sample collection."""
    from rerankers.eval.demo import run_demo

    report = run_demo(args.out, k=args.k, data_dir=args.data, model=args.model, device=args.device,
                      dtype=args.dtype)
    sys.stdout.write(report.render(args.format))
    return 0


# ---------------------------------------------------------------------------------------- main
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "eval": ("evaluate runs (and rerank with --model); print a metrics table", _add_eval_args, cmd_eval),
    "retrieve": ("first-stage BM25 retrieval into a TREC run", _add_retrieve_args, cmd_retrieve),
    "demo": ("the main job on the bundled sample: BM25 -> rerank -> evaluate", _add_demo_args, cmd_demo),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``rerank`` parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="rerank", description="Neural reranking: retrieve, rerank, evaluate.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_text, add_args, func) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only errors")
        add_args(p)
        p.set_defaults(func=func)
    return parser


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("rerankers").setLevel(level)
    for noisy in ("bm25s", "ir_datasets"):  # libraries that set their own chatty levels
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    for internal in ("numba", "matplotlib"):  # compiler/plotting internals: never useful here
        logging.getLogger(internal).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rerank`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbose", False), getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except RerankersError as e:
        print(f"rerank: error: {e}", file=sys.stderr)
    except NotImplementedError as e:
        print(f"rerank: error: not available yet: {e}", file=sys.stderr)
    except BrokenPipeError:  # e.g. `rerank eval ... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as e:  # e.g. an output folder that cannot be written
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"rerank: error: {where}{e.strerror or e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("rerank: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())

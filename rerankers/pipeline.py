"""The workflows the ``rerank`` command runs, as library functions with keyword arguments.

    evaluate_runs       ``rerank eval``: evaluate runs, optionally rerank the first one with a model first
    retrieve_bm25       ``rerank retrieve``: BM25 over a corpus, written as a TREC run
    run_demo            ``rerank demo``: the bundled sample, BM25 retrieve -> rerank -> evaluate
    rerank_with_model   the reranking step of eval and demo: load a cross-encoder, score a run's top candidates

Each returns what the command prints (a :class:`Report`, or a run with its throughput) and writes
the files it was asked for; printing is the CLI's. :class:`UsageError` messages name the
``rerank eval`` flags of the arguments, since the command line is where most users meet them.
"""
from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from rerankers.data.datasets import resolve_qrels, resolve_queries
from rerankers.data.inputs import load_rerank_inputs
from rerankers.data.texts import read_candidates, read_corpus, read_queries
from rerankers.data.trec import Qrels, Run, read_qrels, read_run, write_run
from rerankers.errors import ModelLoadingError, RerankersError, UsageError
from rerankers.eval.metric_names import DEFAULT_METRICS
from rerankers.eval.metrics import check_rel_level, evaluate
from rerankers.eval.report import Report, ReportRow
from rerankers.retrieval import BM25Config, bm25_retrieve

logger = logging.getLogger(__name__)

DEFAULT_BATCH_TOKENS = 16384
SAMPLE_FILES = ("queries.tsv", "collection.tsv", "qrels.txt")
DEMO_METRICS = ("MRR@10", "nDCG@10", "MAP@1000", "R@100", "P@10")


# ------------------------------------------------------------------------------------ reranking
def rerank_with_model(model: str | os.PathLike, run: Run, queries: Mapping[str, str], docs: Mapping[str, str], *,
                      device: str | None = None, dtype: str | None = None, batch_tokens: int | None = None,
                      depth: int | None = None, quantize: str | None = None, cuda_graphs: bool = False
                      ) -> tuple[Run, dict[str, float]]:
    """Rerank ``run`` with the cross-encoder ``model``.

    Args:
        model: a saved cross-encoder folder, a local checkpoint, or a preset name.
        run: the whole first-stage run ``{qid: {docid: score}}``.
        queries: ``{qid: text}`` for every qid of ``run``.
        docs: ``{docid: text}`` for at least every document in a query's top ``depth``.
        device: e.g. ``cpu``, ``cuda``; None = automatic.
        dtype: ``float32``, ``bfloat16``, ``float16``; None = bf16 autocast on the GPU, fp32 on the CPU.
        batch_tokens: token budget per packed batch; None = 16384.
        depth: how many candidates of each query to rerank; None = every candidate.
        quantize: ``int8``: the backbone's Linear layers as int8 weights (:mod:`rerankers.models.quantize`).
        cuda_graphs: each batch's forward replayed from a CUDA graph (``Reranker(cuda_graphs=True)``).

    Returns:
        ``(reranked_run, throughput)``: model scores for each query's top ``depth``, the rest of
        the run kept below them in first-stage order (:meth:`Reranker.rerank_run`), and
        ``{"pairs/s": ..., "tokens/s": ...}`` (real, unpadded tokens; model time, device-synchronised),
        with ``"head": "UNTRAINED"`` where the model's scoring head was never trained (a report column), and
        ``"quantize": "int8 X -> Y MiB"`` (the model's size before and after) where quantized.
    """
    from rerankers.reranker import Reranker

    batch_tokens = batch_tokens or DEFAULT_BATCH_TOKENS
    depth = depth or max((len(d) for d in run.values()), default=1)
    try:
        reranker = Reranker.from_pretrained(model, device=device, dtype=dtype, batch_tokens=batch_tokens,
                                            quantize=quantize, cuda_graphs=cuda_graphs)
    except (ModelLoadingError, ImportError) as e:  # ImportError: a preset's optional package is missing
        raise ModelLoadingError(f"--model {model}: {e}") from None
    reranked = reranker.rerank_run(run, queries, docs, depth=depth)
    st = reranker.last_stats
    logger.info("reranked %d pairs (%d tokens) in %.2fs: %.1f pairs/s, %.0f tokens/s (model only: %.1f pairs/s)",
                st.pairs, st.tokens, st.seconds, st.pairs_per_s, st.tokens_per_s, st.model_pairs_per_s)
    speed: dict[str, Any] = {"pairs/s": round(st.model_pairs_per_s, 1), "tokens/s": round(st.model_tokens_per_s, 0)}
    if not reranker.model.head_trained:  # the report marks the row: its scores mean nothing yet
        speed["head"] = "UNTRAINED"
    if reranker.quantization is not None:
        speed["quantize"] = reranker.quantization.describe()
    return reranked, speed


def _model_name(model: str | os.PathLike) -> str:
    return Path(str(model)).name


def _row(name: str, source: str, run: Run, qrels: Qrels, metrics: Sequence[str], *, qrels_name: str,
         run_name: str, extra: Mapping[str, Any] | None = None, rel_level: int | None = None,
         missing_as_zero: bool = False) -> ReportRow:
    """One evaluated run of a report (``run_name`` and ``qrels_name`` name the inputs in errors)."""
    result = evaluate(run, qrels, metrics, rel_level=rel_level, missing_as_zero=missing_as_zero, run_name=run_name,
                      qrels_name=qrels_name, check_level=False)  # checked once per report (check_rel_level)
    return ReportRow(name=name, source=source, extra=dict(extra or {}), result=result)


def _check_outputs(output: str | os.PathLike | None, report_dir: str | os.PathLike | None) -> None:
    """Raise, naming the path as given, if an output file or report folder cannot be written (nothing created)."""
    from rerankers.utils.io import check_writable, check_writable_dir

    if output:
        check_writable(output)
    if report_dir:
        check_writable_dir(report_dir)


# ----------------------------------------------------------------------------------------- eval
def run_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Short distinct names for run files: the file stem, with parent folders where stems repeat."""
    names = [Path(p).stem for p in paths]
    depth = 1
    while len(set(names)) < len(names) and depth < 4:
        depth += 1
        names = ["/".join(Path(p).with_suffix("").parts[-depth:]) for p in paths]
    return names


def _check_eval_arguments(runs: Sequence[str], *, qrels: str | None, dataset: str | None, model: object,
                          candidates: object, corpus: object, max_p: float, output: object = None,
                          batch_tokens: int | None = None) -> None:
    """Arguments of :func:`evaluate_runs` that do not fit together, checked before anything is read."""
    if output and not model:
        raise UsageError("--output writes the reranked run: it needs --model (evaluating --run writes no run)")
    if batch_tokens is not None and batch_tokens < 1:
        raise UsageError(f"--batch-tokens must be a positive number of tokens, got {batch_tokens}")
    if not qrels and not dataset:
        raise UsageError("give the judgments: --qrels FILE|NAME or --dataset ID")
    if not runs and not candidates:
        raise UsageError("nothing to evaluate: give --run FILE [FILE ...] (or --candidates with --model)")
    if runs and not model and (candidates or corpus):
        what = "--candidates" if candidates else "--corpus"
        raise UsageError(f"{what} gives texts to rerank with; it needs --model (or drop it to evaluate --run alone)")
    if not 0.0 < max_p < 1.0:
        raise UsageError(f"--max-p must be a significance level between 0 and 1, got {max_p:g}")


def evaluate_runs(runs: Sequence[str | os.PathLike] = (), *, qrels: str | None = None, dataset: str | None = None,
                  metrics: Sequence[str] = DEFAULT_METRICS, rel_level: int | None = None,
                  missing_as_zero: bool = False, test: str = "student", max_p: float = 0.05,
                  model: str | os.PathLike | None = None, candidates: str | os.PathLike | None = None,
                  corpus: str | os.PathLike | None = None, queries: str | None = None, depth: int = 100,
                  output: str | os.PathLike | None = None, device: str | None = None, dtype: str | None = None,
                  batch_tokens: int | None = None, save_report: str | os.PathLike | None = None,
                  fuse: str | None = None, fuse_weight: float = 0.5, quantize: str | None = None,
                  cuda_graphs: bool = False) -> Report:
    """Evaluate TREC ``runs`` (the first is the baseline of the significance tests); with ``model``,
    rerank the first-stage run first and report the reranked run second.

    Args:
        runs: TREC run files (``--run``).
        qrels: a qrels file or dataset name; else the judgments of ``dataset``.
        dataset: a dataset (short name or ir_datasets id) giving qrels, and queries/documents to rerank.
        metrics, rel_level, missing_as_zero: as :func:`rerankers.eval.metrics.evaluate`.
        test, max_p: the paired significance test against the first run (``student``, ``fisher``) and its level.
        model: rerank the first-stage run (``runs[0]``, else ``candidates``) with this cross-encoder.
        candidates, corpus, queries: texts for the reranking, see :func:`load_rerank_inputs`; ``candidates``
            alone (no ``runs``, no ``model``) is evaluated as a run.
        depth, device, dtype, batch_tokens: the reranking, see :func:`rerank_with_model`.
        output: write the reranked run here (TREC format).
        save_report: also write the report files (:meth:`Report.save`) into this folder.
        fuse: with ``model``, also a row of the reranked run fused with its first stage: ``rrf`` or
            ``wsum`` (:func:`rerankers.eval.fusion.fuse_runs`; ``fuse_weight`` on the reranked run).
        quantize: with ``model``, score with its int8-quantized twin (:func:`rerank_with_model`).
        cuda_graphs: with ``model``, replay its forward from CUDA graphs (:func:`rerank_with_model`).

    Returns:
        The report, one row per run: the first run, the reranked one (with throughput columns), the others.
    """
    runs = [str(p) for p in runs]
    _check_eval_arguments(runs, qrels=qrels, dataset=dataset, model=model, candidates=candidates, corpus=corpus,
                          max_p=max_p, output=output, batch_tokens=batch_tokens)
    _check_outputs(output, save_report)  # before any model is loaded or document scored
    if fuse and not model:
        raise UsageError("--fuse combines a reranked run with its first stage: it needs --model")
    if quantize is not None:
        from rerankers.models.quantize import check_quantize
        check_quantize(quantize)
        if not model:
            raise UsageError("--quantize applies to the reranking model: it needs --model")
    if cuda_graphs and not model:
        raise UsageError("--cuda-graphs applies to the reranking model: it needs --model")
    if cuda_graphs:  # before any file is read: the device is known now
        import torch

        if (device is None and not torch.cuda.is_available()) or (device is not None and
                                                                 not str(device).startswith("cuda")):
            raise UsageError(f"--cuda-graphs: CUDA graphs need a CUDA device, got "
                             f"{device or 'cpu (no CUDA available)'}")
    if fuse:
        from rerankers.eval.fusion import check_fusion
        check_fusion(fuse, fuse_weight)
    judgments, qrels_name = resolve_qrels(qrels or dataset)
    check_rel_level(judgments, rel_level, metrics, qrels_name)  # once, before any reranking

    entries: list[tuple[str, str, Run, dict]] = [(name, path, read_run(path), {})  # (name, source, run, extra)
                                                 for name, path in zip(run_names(runs), runs)]
    if model:
        run, query_texts, doc_texts = load_rerank_inputs(run=runs[0] if runs else None, candidates=candidates,
                                                         queries=queries, corpus=corpus, dataset=dataset,
                                                         depth=depth)
        base_name, base_source = entries[0][:2] if entries else (Path(candidates).stem, str(candidates))
        if not entries:
            entries.append((base_name, base_source, run, {}))
        reranked, throughput = rerank_with_model(model, run, query_texts, doc_texts, device=device, dtype=dtype,
                                                 batch_tokens=batch_tokens, depth=depth, quantize=quantize,
                                                 cuda_graphs=cuda_graphs)
        if output:
            write_run(reranked, output, tag=_model_name(model).replace(" ", "_") or "rerankers")
            logger.info("wrote the reranked run to %s", output)
        name = f"{base_name} >> {_model_name(model)}@{depth}"
        entries.insert(1, (name, str(output or model), reranked, dict(throughput or {})))
        if fuse:
            from rerankers.eval.fusion import fuse_runs
            fused = fuse_runs(run, reranked, fuse, weight=fuse_weight)
            how = "rrf" if fuse == "rrf" else f"wsum {fuse_weight:g}"
            entries.insert(2, (f"{base_name} + {_model_name(model)} ({how})", f"fused: {how}", fused, {}))
    elif candidates and not runs:
        entries.append((Path(candidates).stem, str(candidates), read_candidates(candidates)[1], {}))

    rows = [_row(name, src, run, judgments, metrics, qrels_name=qrels_name, run_name=src, extra=extra,
                 rel_level=rel_level, missing_as_zero=missing_as_zero)
            for name, src, run, extra in entries]
    report = Report.build(rows, test=test, max_p=max_p, qrels=qrels_name)
    if save_report:
        paths = report.save(save_report)
        logger.info("report written to %s", ", ".join(map(str, paths)))
    return report


# ------------------------------------------------------------------------------------- retrieve
def retrieve_bm25(corpus: str | os.PathLike, queries: str, output: str | os.PathLike, *, k: int = 1000,
                  backend: str = "bm25s", k1: float = 0.9, b: float = 0.4, tag: str | None = None) -> Run:
    """BM25 (:func:`bm25_retrieve`) of the queries in ``queries`` (a file or dataset name) over the
    ``corpus`` file; the top ``k`` per query are written to ``output`` as a TREC run (``tag``, default
    ``bm25-<backend>``) and returned."""
    tag = tag or f"bm25-{backend}"
    if tag.split() != [tag]:  # checked before retrieval, which may take long
        raise UsageError(f"--tag {tag!r}: a run tag must be one word without whitespace")
    _check_outputs(output, None)
    config = BM25Config(k1=k1, b=b, backend=backend)  # bad k1/b fail before the corpus is read
    docs = read_corpus(corpus)
    query_texts, _ = resolve_queries(queries)
    run = bm25_retrieve(docs, query_texts, k=k, config=config)
    write_run(run, output, tag=tag)
    logger.info("wrote %d queries x <= %d documents to %s", len(run), k, output)
    return run


# ----------------------------------------------------------------------------------------- demo
def export_model(model: str | os.PathLike, out: str | os.PathLike) -> Path:
    """``rerank export``: a saved BERT-family cross-encoder as a transformers ``*ForSequenceClassification``
    folder (loads in transformers and sentence-transformers with the same scores)."""
    from rerankers.models.bert import export_sequence_classification
    from rerankers.models.cross_encoder import CrossEncoder
    from rerankers.utils.io import check_writable_dir

    check_writable_dir(out)
    folder = export_sequence_classification(CrossEncoder.from_pretrained(model), out)
    logger.info("exported %s to %s (AutoModelForSequenceClassification)", model, folder)
    return folder


def sample_data_dir() -> Path:
    """The folder of the bundled sample collection (``queries.tsv``, ``collection.tsv``, ``qrels.txt``)."""
    return Path(str(resources.files("rerankers") / "sample_data"))


DEMO_STEPS = 150


def _split_queries(qids: Sequence[str]) -> tuple[list[str], list[str]]:
    """Every other query (sorted by id) for training, the rest held out for evaluation."""
    ordered = sorted(qids)
    return ordered[0::2], ordered[1::2]


def _train_demo_model(kind: str, folder: Path, texts: Sequence[str], train_files: Mapping[str, str], *,
                      steps: int, seed: int, device: str | None) -> Any:
    """Build a tiny from-scratch ``kind`` backbone over ``texts`` and fine-tune it with LCE on ``train_files``."""
    from rerankers.train import resolve_training_config, run_training
    from rerankers.train.tiny import save_tiny_backbone

    params = save_tiny_backbone(kind, folder / "init", texts, seed=seed)
    cfg = resolve_training_config(overrides=dict(
        backbone=str(folder / "init"), out=str(folder / "run"), train=[train_files["run"]],
        train_qrels=[train_files["qrels"]], corpus=train_files["corpus"], queries=train_files["queries"],
        group_size=8, queries_per_step=4, lr=3e-3, warmup_steps=10, max_steps=steps, max_length=128, seed=seed,
        log_every=25, weight_decay=0.01, device=device, **({"dtype": "float32"} if device in (None, "cpu") else {})))
    result = run_training(cfg)
    return result, params


def run_demo(out_dir: str | os.PathLike = "demo_out", *, k: int = 100, data_dir: str | os.PathLike | None = None,
             metrics: Sequence[str] = DEMO_METRICS, model: str | os.PathLike | None = None,
             device: str | None = None, dtype: str | None = None, train: bool = True, steps: int = DEMO_STEPS,
             seed: int = 0) -> Report:
    """The main job on a small collection: BM25 -> train tiny Mamba and BERT rerankers -> rerank -> evaluate.

    ``rerank demo --out DIR`` (and ``make demo``) runs this. The collection is ``data_dir``, by
    default the sample that ships with the package (:func:`sample_data_dir`), so nothing is
    downloaded. Its queries are split by id: every other query trains, the rest are held out, and
    every row of the report is evaluated on the held-out queries only.

    With ``train`` (the default), a tiny Mamba and a tiny BERT of about equal size are built from
    scratch over one word vocabulary of the training texts (:mod:`rerankers.train.tiny`), trained
    for ``steps`` steps with LCE on the training queries' BM25 candidates and graded judgments
    (``rerank train``, the same loop), and rerank the held-out queries' BM25 candidates; their rows
    give the training throughput (real tokens/s) beside the inference throughput. With ``model``
    (a saved CrossEncoder, a local checkpoint, or a preset where the hub is reachable) that model's
    row is added. Outputs in ``out_dir``: ``bm25.trec``, ``train/`` (the training split),
    ``tiny-mamba/``, ``tiny-bert/`` (each ``init/`` and the training run ``run/``),
    ``reranked-*.trec``, and the report files of :meth:`Report.save`.
    """
    from rerankers.data.trec import write_qrels
    from rerankers.utils.io import check_writable_dir

    data = Path(data_dir) if data_dir is not None else sample_data_dir()
    missing = [f for f in SAMPLE_FILES if not (data / f).is_file()]
    if missing:
        raise RerankersError(f"sample collection incomplete in {data}: missing {', '.join(missing)}")
    out = Path(out_dir)
    check_writable_dir(out)
    if model is not None:  # an unknown model fails now, not after the training
        from rerankers.models.presets import resolve
        try:
            resolve(model)
        except ModelLoadingError as e:
            raise ModelLoadingError(f"--model {model}: {e}") from None
    queries = read_queries(data / "queries.tsv")
    docs = read_corpus(data / "collection.tsv")
    qrels = read_qrels(data / "qrels.txt")
    train_ids, test_ids = _split_queries(sorted(set(queries) & set(qrels)))
    logger.info("collection: %d queries (%d train, %d held out), %d passages, %d judgments", len(queries),
                len(train_ids), len(test_ids), len(docs), sum(map(len, qrels.values())))

    run = bm25_retrieve(docs, queries, k=k, config=BM25Config())
    write_run(run, out / "bm25.trec", tag="bm25")
    test_run = {q: run[q] for q in test_ids if q in run}
    test_qrels = {q: qrels[q] for q in test_ids}
    qrels_name = f"{data / 'qrels.txt'} (held-out queries)"

    def row(name: str, source: Path, ranked: Run, extra: Mapping[str, Any] | None = None) -> ReportRow:
        return _row(name, str(source), ranked, test_qrels, metrics, qrels_name=qrels_name, run_name=name,
                    extra=extra)

    rows = [row("BM25", out / "bm25.trec", test_run)]
    if train:
        split = out / "train"
        write_run({q: run[q] for q in train_ids if q in run}, split / "bm25.trec", tag="bm25")
        write_qrels({q: qrels[q] for q in train_ids}, split / "qrels.txt")
        files = {"run": str(split / "bm25.trec"), "qrels": str(split / "qrels.txt"),
                 "corpus": str(data / "collection.tsv"), "queries": str(data / "queries.tsv")}
        texts = [*docs.values(), *(queries[q] for q in train_ids)]
        for kind in ("mamba", "bert"):
            result, params = _train_demo_model(kind, out / f"tiny-{kind}", texts, files, steps=steps, seed=seed,
                                               device=device)
            reranked, speed = rerank_with_model(result.model_dir, test_run, queries, docs, device=device, dtype=dtype)
            write_run(reranked, out / f"reranked-{kind}.trec", tag=f"tiny-{kind}")
            trained = result.report["throughput"]
            rows.append(row(f"BM25 >> tiny {kind.capitalize() if kind == 'mamba' else kind.upper()}",
                            out / f"reranked-{kind}.trec", reranked,
                            {"params": params["non_embedding"], "train tokens/s": round(trained["tokens_per_s"]),
                             **speed}))
    if model is not None:
        reranked, throughput = rerank_with_model(model, test_run, queries, docs, device=device, dtype=dtype)
        write_run(reranked, out / "reranked.trec", tag="reranked")
        rows.append(row(f"BM25 >> {_model_name(model)}", out / "reranked.trec", reranked, throughput))
    report = Report.build(rows, qrels=qrels_name)
    report.save(out)
    logger.info("demo outputs in %s", out)
    return report

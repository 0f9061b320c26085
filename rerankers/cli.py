"""The ``rerank`` command line: parses the arguments, calls a library function, prints the result.

    rerank eval --run bm25.trec [more.trec ...] --qrels dl19|FILE [--metrics ...] [--save-report DIR]
    rerank eval --model PATH --candidates cands.json --qrels FILE        (first stage vs reranked)
    rerank retrieve --corpus collection.tsv --queries queries.tsv --output bm25.trec
    rerank train --backbone mamba-130m --train cands.json --train-qrels qrels.txt --out runs/m [--config FILE.yaml]
    rerank train --resume runs/m
    rerank prune --model runs/m/model --out runs/m-small --layers-keep 4 [--heads-per-layer 6] [--ffn-keep 0.5]
    rerank teacher --model runs/m/model --candidates cands.json --out teacher.trec
    rerank bench train|infer|scaling|profile --backbone mamba-130m bert-base --out bench_out
    rerank demo --out demo_out

The workflows are :mod:`rerankers.pipeline` (eval, retrieve, demo) and :mod:`rerankers.train` (train); a new
command is one entry of :data:`COMMANDS`: (help, add its arguments, run it). User errors (bad files,
unknown names) end as one line ``rerank: error: ...`` with exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Sequence

from rerankers import __version__
from rerankers.errors import RerankersError, UsageError, one_line
from rerankers.eval.metric_names import DEFAULT_METRICS

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
    rr.add_argument("--quantize", default=None, metavar="MODE",
                    help="int8: score with the backbone's Linear layers as int8 weights (per-channel scales; the "
                         "head stays fp32); the report shows the model's size before and after")
    rr.add_argument("--cuda-graphs", action="store_true",
                    help="replay each batch's forward from a CUDA graph (batches padded to shape buckets; CUDA, "
                         "packed backbones): removes the host's per-launch cost, which sets Mamba's pace")
    rr.add_argument("--fuse", choices=("rrf", "wsum"), default=None,
                    help="also report the reranked run fused with its first stage (reciprocal rank fusion, or a "
                         "weighted sum of min-max normalised scores)")
    rr.add_argument("--fuse-weight", type=float, default=0.5, help="wsum: the reranked run's weight (default 0.5)")


def cmd_eval(args: argparse.Namespace) -> int:
    """``rerank eval``: evaluate runs (and a reranked run with ``--model``), print the table."""
    from rerankers.pipeline import evaluate_runs

    report = evaluate_runs(args.run, qrels=args.qrels, dataset=args.dataset, metrics=args.metrics,
                           rel_level=args.rel_level, missing_as_zero=args.missing_as_zero, test=args.test,
                           max_p=args.max_p, model=args.model, candidates=args.candidates, corpus=args.corpus,
                           queries=args.queries, depth=args.depth, output=args.output, device=args.device,
                           dtype=args.dtype, batch_tokens=args.batch_tokens, save_report=args.save_report,
                           fuse=args.fuse, fuse_weight=args.fuse_weight, quantize=args.quantize,
                           cuda_graphs=args.cuda_graphs)
    sys.stdout.write(report.render(args.format))
    return 0


# ------------------------------------------------------------------------------------ retrieve
def _add_retrieve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", required=True, metavar="FILE", help="collection.tsv (pid<TAB>text) or JSONL")
    p.add_argument("--queries", required=True, metavar="FILE|NAME", help="queries (qid<TAB>text) or a dataset name")
    p.add_argument("--output", required=True, metavar="FILE", help="the TREC run to write")
    p.add_argument("--k", type=int, default=1000, help="documents per query (default: %(default)s)")
    p.add_argument("--backend", choices=("bm25s", "pyserini"), default="bm25s",
                   help="bm25s (embedded, default) or pyserini (Lucene; pip install -e '.[pyserini]')")
    p.add_argument("--k1", type=float, default=0.9, help="BM25 k1 (default: %(default)s, Anserini's)")
    p.add_argument("--b", type=float, default=0.4, help="BM25 b (default: %(default)s, Anserini's)")
    p.add_argument("--tag", default=None, help="run tag (default: bm25-<backend>, e.g. bm25-bm25s)")


def cmd_retrieve(args: argparse.Namespace) -> int:
    """``rerank retrieve``: BM25 over a corpus, written as a TREC run."""
    from rerankers.pipeline import retrieve_bm25

    retrieve_bm25(args.corpus, args.queries, args.output, k=args.k, backend=args.backend, k1=args.k1, b=args.b,
                  tag=args.tag)
    return 0


# ---------------------------------------------------------------------------------------- demo
def _add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--k", type=int, default=100, help="BM25 candidates per query (default: %(default)s)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="a folder with queries.tsv, collection.tsv, qrels.txt (default: the bundled sample)")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table", help="output format")
    p.add_argument("--model", default=None, metavar="PATH_OR_NAME",
                   help="also rerank with this trained cross-encoder (a saved folder or a preset)")
    p.add_argument("--no-train", dest="train", action="store_false",
                   help="skip training the tiny Mamba and BERT rerankers (BM25, and --model if given)")
    p.add_argument("--steps", type=int, default=150, help="training steps of each tiny model (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiny models and their training")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                   help="model dtype (default: bf16 autocast on the GPU, fp32 on the CPU)")


def cmd_demo(args: argparse.Namespace) -> int:
    """``rerank demo``: BM25 -> train tiny Mamba and BERT -> rerank -> evaluate on the bundled sample."""
    from rerankers.pipeline import run_demo

    if args.steps < 1:
        raise UsageError(f"--steps must be positive, got {args.steps}")
    report = run_demo(args.out, k=args.k, data_dir=args.data, model=args.model, device=args.device,
                      dtype=args.dtype, train=args.train, steps=args.steps, seed=args.seed)
    sys.stdout.write(report.render(args.format))
    return 0


# ---------------------------------------------------------------------------------------- train
def _add_train_args(p: argparse.ArgumentParser) -> None:
    """Flags of ``rerank train``: each is a TrainConfig field (``--group-size`` -> group_size); a flag
    left out keeps the config file's value or the default (argparse.SUPPRESS: only given flags override)."""
    from rerankers.train.config import COMPILE_MODES

    S = argparse.SUPPRESS
    run = p.add_argument_group("run")
    run.add_argument("--config", metavar="FILE.yaml", help="settings file (strict: an unknown key is an error); "
                     "flags override it")
    run.add_argument("--resume", metavar="OUT", help="continue the run in OUT from its latest checkpoint, with "
                     "its saved settings")
    run.add_argument("--dry-run", action="store_true", help="resolve the settings, check every path, print the "
                     "plan; train nothing")
    run.add_argument("--out", default=S, metavar="DIR", help="output folder (checkpoints, model/, logs, report)")
    run.add_argument("--seed", type=int, default=S, help="seed of sampling, initialisation, dropout (default 42)")
    run.add_argument("--device", default=S, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    run.add_argument("--dtype", default=S, choices=("auto", "float32", "bfloat16"),
                     help="auto: bf16 autocast on the GPU, fp32 on the CPU")
    data = p.add_argument_group("training data")
    data.add_argument("--train", nargs="+", default=S, metavar="SOURCE",
                      help="candidates file(s) (JSON/JSONL with texts), TREC run file(s), JSONL {query, positives, "
                           "negatives}, TSV text or id triples, or an ir_datasets id; several concatenate")
    data.add_argument("--train-qrels", nargs="+", default=S, metavar="FILE", help="judgments of the sources "
                      "(one for all, or one per source)")
    data.add_argument("--corpus", default=S, metavar="FILE", help="document texts for run files and id triples")
    data.add_argument("--queries", default=S, metavar="FILE", help="query texts for run files and id triples")
    data.add_argument("--negatives-run", default=S, metavar="FILE",
                      help="a run giving negatives for msmarco-passage/train/judged")
    data.add_argument("--rel-level", type=int, default=S, help="positives are judged >= N (default: 2 on graded "
                      "TREC DL qrels, else 1)")
    data.add_argument("--negatives-depth", type=int, default=S, help="sample negatives from the top N candidates")
    data.add_argument("--teacher", default=S, metavar="RUN", help="a run of teacher scores (Margin-MSE)")
    model = p.add_argument_group("model")
    model.add_argument("--backbone", default=S, metavar="NAME|PATH", help="a preset (mamba-130m, bert-base, ...), "
                       "a local folder or a hub id; a saved cross-encoder folder (a pruned model, a student) is "
                       "trained on from its weights and head")
    model.add_argument("--init", default=S, choices=("pretrained", "random"),
                       help="random: the backbone's shape with random weights (no pretrained Mamba offline)")
    model.add_argument("--tokenizer", default=S, metavar="PATH", help="tokenizer folder or hub id (with --init random)")
    model.add_argument("--max-length", type=int, default=S, help="longest pair in tokens (template)")
    model.add_argument("--max-query-tokens", type=int, default=S, help="the query is cut beyond this")
    model.add_argument("--lora", type=int, default=S, metavar="R", help="train LoRA adapters of rank R (+ the head)")
    model.add_argument("--lora-alpha", type=float, default=S, help="LoRA alpha (default: 2 R)")
    model.add_argument("--lora-dropout", type=float, default=S, help="LoRA dropout (default 0)")
    model.add_argument("--qlora", action="store_true", default=S,
                       help="QLoRA: the frozen base of --lora in 4-bit NF4 (needs bitsandbytes); saved merged, in fp32")
    model.add_argument("--pooling", default=S, choices=("cls", "last", "mean"),
                       help="pool the head's input other than the backbone's default ([CLS] for BERT, last for Mamba)")
    model.add_argument("--gradient-checkpointing", action="store_true", default=S, help="recompute activations")
    model.add_argument("--recompute-mixer", nargs="?", const="on", choices=("auto", "on", "off"), default=S,
                       help="Mamba-1: rebuild each mixer's conv output and delta in the backward (2 x T x d_inner "
                            "activations a layer fewer kept); auto (default): where it applies and pays (eager steps, "
                            "no --gradient-checkpointing, on CUDA, hidden size >= 1024: mamba-370m and up, in "
                            "micro-batches of >= 8192 tokens); "
                            "on (the bare flag): required")
    opt = p.add_argument_group("objective and optimisation")
    opt.add_argument("--loss", default=S, help="lce (default), bce, margin-mse, ranknet, listnet, lambdaloss")
    opt.add_argument("--group-size", type=int, default=S, help="documents per group: 1 positive + n-1 negatives "
                     "(default 8)")
    opt.add_argument("--queries-per-step", type=int, default=S, help="groups per optimizer step over all "
                     "processes (default 8)")
    opt.add_argument("--micro-batch-tokens", type=int, default=S, help="token budget of one packed micro-batch "
                     "(groups kept whole; default 16384)")
    opt.add_argument("--static-tokens", type=int, default=S, metavar="N", help="pad every micro-batch to exactly N "
                     "tokens and a fixed number of sequence slots (one shape per step, for --compile; the loss "
                     "ignores the padding; replaces --micro-batch-tokens)")
    opt.add_argument("--compile", default=S, choices=COMPILE_MODES,
                     help="torch.compile the training forward (reduce-overhead: with CUDA graphs), or cuda-graphs: "
                          "the eager forward and backward captured once and replayed (CUDA, --static-tokens); "
                          "default off")
    opt.add_argument("--lr", type=float, default=S, help="peak learning rate (default 2e-5)")
    opt.add_argument("--head-lr", type=float, default=S, help="learning rate of the scoring head (default: --lr); "
                     "a fresh head on a pretrained encoder learns little in few steps at an encoder's rate")
    opt.add_argument("--weight-decay", type=float, default=S, help="AdamW weight decay (default 0.01; none on "
                     "A_log, D, norms, biases)")
    opt.add_argument("--warmup-steps", type=int, default=S, help="linear warmup steps (default 1000)")
    opt.add_argument("--schedule", default=S, choices=("linear", "cosine", "constant"), help="decay after warmup")
    opt.add_argument("--max-grad-norm", type=float, default=S, help="gradient clipping (default 1.0)")
    opt.add_argument("--epochs", type=float, default=S, help="epochs over the training queries (default 1)")
    opt.add_argument("--max-steps", type=int, default=S, help="optimizer steps (overrides --epochs)")
    ev = p.add_argument_group("evaluation, checkpoints, logging")
    ev.add_argument("--eval-candidates", default=S, metavar="FILE", help="dev candidates with texts")
    ev.add_argument("--eval-qrels", default=S, metavar="FILE|NAME", help="dev judgments")
    ev.add_argument("--eval-every", type=int, default=S, help="evaluate every N steps (and at the end)")
    ev.add_argument("--eval-depth", type=int, default=S, help="rerank the top N dev candidates (default 100)")
    ev.add_argument("--eval-metric", default=S, help="metric that picks the best checkpoint (default nDCG@10)")
    ev.add_argument("--save-every", type=int, default=S, help="checkpoint every N steps")
    ev.add_argument("--save-total-limit", type=int, default=S, help="keep at most N checkpoints")
    ev.add_argument("--log-every", type=int, default=S, help="log every N steps (default 10)")


_TRAIN_RUN_FLAGS = ("config", "resume", "dry_run", "func", "command", "verbose", "quiet")


def cmd_train(args: argparse.Namespace) -> int:
    """``rerank train``: resolve the settings, then train (or print the plan with --dry-run)."""
    from rerankers.train import plan_training, resolve_training_config, run_training

    overrides = {k: v for k, v in vars(args).items() if k not in _TRAIN_RUN_FLAGS}
    cfg = resolve_training_config(config=args.config, resume=args.resume, overrides=overrides)
    if args.dry_run:
        sys.stdout.write(plan_training(cfg, resume=args.resume is not None))
        return 0
    result = run_training(cfg, resume=args.resume is not None)
    sys.stdout.write(result.summary())
    return 0


# -------------------------------------------------------------------------------------- export
def _add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="PATH", help="a saved BERT-family cross-encoder folder")
    p.add_argument("--out", required=True, metavar="DIR", help="the transformers folder to write")


def cmd_export(args: argparse.Namespace) -> int:
    """``rerank export``: write a transformers *ForSequenceClassification folder."""
    from rerankers.pipeline import export_model

    sys.stdout.write(f"{export_model(args.model, args.out)}\n")
    return 0


# --------------------------------------------------------------------------------------- prune
def _add_prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="PATH_OR_NAME", help="the cross-encoder to prune (a saved folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="the pruned cross-encoder folder to write")
    p.add_argument("--heads-per-layer", type=int, default=None, metavar="K",
                   help="BERT: keep the K attention heads of each layer with the largest value-output norm")
    p.add_argument("--ffn-keep", type=float, default=None, metavar="F",
                   help="BERT: keep F FFN channels per layer (a count >= 1, or a fraction 0 < F < 1), by weight norm")
    p.add_argument("--layers-keep", type=int, default=None, metavar="N",
                   help="BERT or Mamba: keep N evenly spaced layers (the first and the last among them)")


def cmd_prune(args: argparse.Namespace) -> int:
    """``rerank prune``: write a statically pruned copy of a cross-encoder; print what was kept."""
    from rerankers.models.prune import prune_folder

    report = prune_folder(args.model, args.out, heads_per_layer=args.heads_per_layer, ffn_keep=args.ffn_keep,
                          layers_keep=args.layers_keep)
    sys.stdout.write(f"{args.out}: {report.parameters_before:,} -> {report.parameters_after:,} parameters"
                     f" (layers {report.layers or 'all'}, heads/layer "
                     f"{len(report.heads[0]) if report.heads else 'all'}, FFN {report.ffn or 'all'})\n")
    return 0


# ------------------------------------------------------------------------------------- teacher
def _add_teacher_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="PATH_OR_NAME", help="the teacher cross-encoder")
    p.add_argument("--candidates", nargs="+", default=[], metavar="FILE",
                   help="training candidates with texts (JSON/JSONL); several are merged")
    p.add_argument("--run", default=None, metavar="FILE", help="or a TREC run of candidates, with --queries and "
                   "--corpus (or --dataset) for the texts")
    p.add_argument("--queries", default=None, metavar="FILE|NAME", help="query texts for --run")
    p.add_argument("--corpus", default=None, metavar="FILE", help="document texts for --run")
    p.add_argument("--dataset", default=None, metavar="ID", help="texts for --run from a dataset")
    p.add_argument("--out", required=True, metavar="FILE", help="the teacher run to write (rerank train --teacher)")
    p.add_argument("--tag", default=None, help="run tag (default: teacher-<model>)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"), help="model dtype")
    p.add_argument("--batch-tokens", type=int, default=None, help="token budget of one packed batch")


def cmd_teacher(args: argparse.Namespace) -> int:
    """``rerank teacher``: a cross-encoder's scores on every training candidate, written as a TREC run."""
    from rerankers.train.teacher import score_teacher_run

    run, _ = score_teacher_run(args.model, args.out, candidates=args.candidates, run=args.run, queries=args.queries,
                               corpus=args.corpus, dataset=args.dataset, device=args.device, dtype=args.dtype,
                               batch_tokens=args.batch_tokens, tag=args.tag)
    sys.stdout.write(f"{args.out}: {len(run)} queries, {sum(map(len, run.values()))} pairs\n")
    return 0


# --------------------------------------------------------------------------------------- bench
def _add_bench_args(p: argparse.ArgumentParser) -> None:
    from rerankers.train.config import COMPILE_MODES

    sub = p.add_subparsers(dest="bench_mode", metavar="MODE")
    sub.required = True
    helps = {"train": "the full training step: packed / padded / single, beside the anchors",
             "infer": "reranking throughput over a run's top-k, beside the anchors",
             "scaling": "training step time and memory against sequence length",
             "profile": "a training step's GPU time by operator class"}
    for mode, help_text in helps.items():
        m = sub.add_parser(mode, help=help_text, description=help_text)
        m.add_argument("--backbone", nargs="+", dest="backbones", default=None, metavar="NAME",
                       help="presets or folders (random weights of the real size; default: mamba-130m bert-base)")
        m.add_argument("--out", required=True, metavar="DIR", help="bench_<mode>.json / .md / .png go here")
        m.add_argument("--device", default=None, help="cuda (measurements) or cpu (a smoke run); default: cuda if "
                       "available")
        m.add_argument("--dtype", default=None, choices=("bfloat16", "float16", "float32", "auto"),
                       help="autocast dtype (default: bfloat16 on CUDA, float32 on the CPU)")
        m.add_argument("--anchors", nargs="+", default=None, metavar="NAME",
                       help="mamba-ssm, transformers, sentence-transformers, 'all' (default) or 'none'")
        m.add_argument("--tokenizer", default=None, help="tokenizer folder or preset (default: the backbone's, "
                       "else a synthetic one of its vocabulary size)")
        m.add_argument("--warmup", type=int, default=None, help="untimed calls first")
        m.add_argument("--seed", type=int, default=None)
        m.add_argument("--no-plots", action="store_true", help="skip the PNG (no matplotlib needed)")
        if mode in ("train", "infer"):
            m.add_argument("--candidates", default=None, metavar="FILE",
                           help="real texts: a candidates file (default: MS MARCO-shaped random token ids)")
            m.add_argument("--depth", type=int, default=None, help="top-k of each query in --candidates")
            m.add_argument("--modes", nargs="+", default=None,
                           choices=("packed", "padded", "static", "single", "recompute") if mode == "train" else
                           ("packed", "padded", "single", "graphed"),
                           help="how ours runs a batch" + (" (static: packed to one fixed shape; recompute: packed, "
                                                           "Mamba-1's mixers rebuilding their conv output and delta "
                                                           "in the backward)" if mode == "train" else
                                                           " (graphed: packed, each batch padded to a shape bucket "
                                                           "and replayed from a CUDA graph; CUDA only)"))
            m.add_argument("--init", default=None, choices=("random", "pretrained"), help="weights (default random)")
        if mode == "train":
            m.add_argument("--pairs", nargs="+", type=int, default=None, help="pairs per step (default 64 256)")
            m.add_argument("--steps", type=int, default=None, help="timed steps (default 10)")
            m.add_argument("--single-steps", type=int, default=None, help="timed steps of mode single (default 3)")
            m.add_argument("--group-size", type=int, default=None, help="pairs per query group of the loss (8)")
            m.add_argument("--static-tokens", type=int, default=None, metavar="N",
                           help="mode static: pad every batch to N tokens (default: per --pairs, the largest batch "
                           "+ 1 rounded up to 256)")
            m.add_argument("--compile", default=None, choices=COMPILE_MODES,
                           help="torch.compile ours packed / static (reduce-overhead: with CUDA graphs), or "
                                "cuda-graphs (static only: the eager forward and backward captured); default off")
            m.add_argument("--lora", nargs="+", type=int, default=None, metavar="R",
                           help="also rows of ours packed under LoRA adapters of each rank R (needs peft)")
            m.add_argument("--qlora", nargs="+", type=int, default=None, metavar="R",
                           help="also rows of QLoRA: LoRA of rank R over a 4-bit NF4 base (needs peft and "
                           "bitsandbytes)")
        if mode == "infer":
            m.add_argument("--pairs", type=int, default=None, help="random-id pairs without --candidates (4096)")
            m.add_argument("--batch-tokens", type=int, default=None, help="token budget of a batch (16384)")
            m.add_argument("--st-batch-size", type=int, default=None, help="sentence-transformers batch size (128)")
            m.add_argument("--repeats", type=int, default=None, help="timed passes over all pairs (3)")
        if mode == "scaling":
            m.add_argument("--min-length", type=int, default=None, help="shortest sequence (128)")
            m.add_argument("--max-length", type=int, default=None, help="longest sequence (16384)")
            m.add_argument("--budget-tokens", type=int, default=None, help="tokens per step (16384)")
            m.add_argument("--steps", type=int, default=None, help="timed steps per length (5)")
        if mode == "profile":
            m.add_argument("--pairs", type=int, default=None, help="pairs per step (256)")
            m.add_argument("--steps", type=int, default=None, help="profiled steps (3)")
            m.add_argument("--top", type=int, default=None, help="top kernels listed (15)")
            m.add_argument("--host", type=int, default=None, metavar="N",
                           help="also the steps under cProfile: the N Python functions with the most self time "
                                "(where a host-bound step's CPU goes)")
            m.add_argument("--step", default=None, choices=("train", "infer"),  # bench.profile.STEPS, without torch
                           help="profile training steps (default) or inference calls (no gradient)")
            m.add_argument("--modes", nargs="+", default=None, choices=("packed", "padded", "single"),
                           help="how ours runs a batch (default packed)")
            m.add_argument("--length", type=int, default=None,
                           help="--pairs sequences of exactly this many tokens (default: MS MARCO-shaped pairs)")


def cmd_bench(args: argparse.Namespace) -> int:
    """``rerank bench MODE``: run it, write its files, print its Markdown."""
    from rerankers.bench.anchors import ANCHORS
    from rerankers.bench.report import to_markdown
    from rerankers.bench.run import run_bench

    options = {k: v for k, v in vars(args).items() if k not in ("command", "func", "bench_mode", "out", "no_plots",
                                                              "verbose", "quiet")}
    anchors = options.pop("anchors")
    if anchors is not None:
        if anchors in (["all"], ["auto"]):
            anchors = None
        elif anchors == ["none"]:
            anchors = []
        elif not set(anchors) <= set(ANCHORS):
            raise UsageError(f"--anchors {' '.join(anchors)}: each one of {', '.join(ANCHORS)}, or all / none")
    if anchors is not None:
        options["anchors"] = anchors
    command = "rerank " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    result, paths = run_bench(args.bench_mode, args.out, plots=not args.no_plots, command=command, **options)
    sys.stdout.write(to_markdown(result))
    _tell("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


# ---------------------------------------------------------------------------------------- main
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "train": ("train a cross-encoder on packed groups (LCE, BCE, Margin-MSE, listwise)", _add_train_args, cmd_train),
    "eval": ("evaluate runs (and rerank with --model); print a metrics table", _add_eval_args, cmd_eval),
    "retrieve": ("first-stage BM25 retrieval into a TREC run", _add_retrieve_args, cmd_retrieve),
    "export": ("write a BERT-family cross-encoder as a transformers sequence-classification folder",
               _add_export_args, cmd_export),
    "prune": ("statically prune a cross-encoder (BERT heads / FFN channels, BERT or Mamba layers)",
              _add_prune_args, cmd_prune),
    "teacher": ("score training candidates with a cross-encoder: the teacher run of a distillation",
                _add_teacher_args, cmd_teacher),
    "bench": ("measure training / inference throughput, length scaling and profiles beside the anchors",
              _add_bench_args, cmd_bench),
    "demo": ("the main job on the bundled sample: BM25 -> train tiny Mamba and BERT -> rerank -> evaluate",
             _add_demo_args, cmd_demo),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``rerank`` parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="rerank", description="Neural reranking: retrieve, rerank, evaluate.")
    parser.add_argument("--version", action="version", version=f"rerank (rerankers) {__version__}")
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


class _AtLeast(logging.Filter):
    """Passes records of ``level`` and above, whatever level a library later gives its own logger."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


# libraries whose loggers speak on their own: ir_datasets sets INFO and its own handler on first use (filtered on
# its logger, where it logs), transformers and huggingface_hub configure theirs on import from these variables
_FILTERED = ("bm25s", "ir_datasets", "py.warnings")
_VERBOSITY_VARIABLES = ("TRANSFORMERS_VERBOSITY", "HF_HUB_VERBOSITY")


def _setup_logging(verbose: bool, quiet: bool) -> None:
    """Our loggers at INFO (``-v`` DEBUG, ``-q`` ERROR); libraries at WARNING (``-v`` DEBUG, ``-q`` ERROR: their
    INFO/WARNING lines, Python warnings and transformers' progress bars are hidden)."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    libraries = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.captureWarnings(True)  # warnings.warn from libraries: through logging, so -q hides them
    logging.getLogger("rerankers").setLevel(level)
    for name in _FILTERED:
        lib = logging.getLogger(name)
        lib.setLevel(libraries)
        for old in [f for f in lib.filters if isinstance(f, _AtLeast)]:
            lib.removeFilter(old)
        lib.addFilter(_AtLeast(libraries))
    for variable in _VERBOSITY_VARIABLES:  # read when transformers / huggingface_hub configure their loggers
        os.environ[variable] = logging.getLevelName(libraries).lower()
    for name in ("transformers", "huggingface_hub"):  # where already imported (and configured)
        if name in sys.modules:
            logging.getLogger(name).setLevel(libraries)
    if quiet:  # transformers' "Loading weights" / "Writing model shards" bars
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        if "transformers" in sys.modules:
            from transformers.utils import logging as transformers_logging
            transformers_logging.disable_progress_bar()
    for internal in ("numba", "matplotlib"):  # compiler/plotting internals: never useful here
        logging.getLogger(internal).setLevel(logging.WARNING)


def _tell(line: str) -> None:
    """One line for the user on stderr (the command's own output, not a log record); a message of several
    lines (another library's) is joined into one."""
    sys.stderr.write(one_line(line, limit=None) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rerank`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    _setup_logging(verbose, getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except RerankersError as e:
        _tell(f"rerank: error: {e}")
    except NotImplementedError as e:
        _tell(f"rerank: error: not available yet: {e}")
    except BrokenPipeError:  # e.g. `rerank eval ... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as e:  # e.g. an output folder that cannot be written
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        _tell(f"rerank: error: {where}{e.strerror or e}")
    except KeyboardInterrupt:
        _tell("rerank: interrupted")
        return 130
    except Exception as e:  # a bug, or a library's failure we do not know: one line, the traceback with -v
        if verbose:
            raise
        _tell(f"rerank: error: unexpected {one_line(e, limit=None)} (rerun with -v for the traceback)")
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())

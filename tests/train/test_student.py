"""Distillation into a smaller student: a trained cross-encoder's scores on the training candidates written as a
teacher run (rerankers.train.teacher), a student with fewer layers (the teacher pruned) trained on them with
Margin-MSE lowers its Margin-MSE, and a saved cross-encoder folder is where `rerank train` starts from."""
from __future__ import annotations

import pytest
import torch

from rerankers.data.texts import read_candidates
from rerankers.data.trec import read_run
from rerankers.errors import TrainingConfigError, UsageError
from rerankers.models.cross_encoder import CrossEncoder
from rerankers.reranker import Reranker
from rerankers.train.config import resolve_config
from rerankers.train.loop import build_model, train
from rerankers.train.losses.margin_mse import MarginMSELoss
from rerankers.train.teacher import score_teacher_run


def _settings(backbone, data: dict, out, **kw) -> dict:
    base = dict(backbone=str(backbone), out=str(out), train=[data["candidates"]], train_qrels=[data["qrels"]],
                group_size=4, queries_per_step=4, lr=3e-3, warmup_steps=2, max_steps=20, log_every=5,
                max_length=128, seed=1)
    return {**base, **kw}


@pytest.fixture(scope="module")
def small(sample_training, tmp_path_factory) -> dict:
    """The sample's first 10 queries: candidates file and run file (the scoring tests stay fast)."""
    import json

    from rerankers.data.trec import write_run

    root = tmp_path_factory.mktemp("small")
    entries = json.loads(open(sample_training["candidates"]).read())[:10]
    (root / "candidates.json").write_text(json.dumps(entries))
    qids = {hit["qid"] for e in entries for hit in e["hits"]}
    write_run({q: d for q, d in read_run(sample_training["run"]).items() if q in qids}, root / "run.trec")
    return {**sample_training, "candidates": str(root / "candidates.json"), "run": str(root / "run.trec")}


def _same_scores(a: dict, b: dict) -> bool:
    """The same queries and documents, scores equal up to float reassociation (other batch compositions)."""
    return ({q: set(d) for q, d in a.items()} == {q: set(d) for q, d in b.items()}
            and all(a[q][d] == pytest.approx(b[q][d], rel=1e-6, abs=1e-7) for q in a for d in a[q]))


@pytest.fixture(scope="module")
def teacher_dir(tiny_bert_dir, sample_training, tmp_path_factory):
    """The teacher: a tiny BERT cross-encoder trained with LCE on the bundled sample (40 steps at lr 1e-2: the
    loss falls from ln 4 = 1.39 to about 0.5, the scores of a query's candidates spread by about 1)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    return train(resolve_config(None, _settings(tiny_bert_dir, sample_training, out, lr=1e-2, max_steps=40))).model_dir


def _margin_mse(model, candidates: str, teacher: dict) -> float:
    """Mean all-pairs Margin-MSE between ``model``'s and the teacher's scores over every query's candidates."""
    queries, run, docs = read_candidates(candidates)
    reranker, loss, total = Reranker(model, device="cpu"), MarginMSELoss(all_pairs=True), []
    for qid in sorted(run):
        ids = sorted(run[qid])
        s = torch.tensor(reranker.score(queries[qid], [docs[d] for d in ids]))[None]
        t = torch.tensor([teacher[qid][d] for d in ids])[None]
        total.append(float(loss(s, torch.zeros_like(s), t)))
    return sum(total) / len(total)


def test_teacher_run_scores_every_candidate_as_rerank_eval_output_does(teacher_dir, small, tmp_path):
    from rerankers.pipeline import evaluate_runs

    run, speed = score_teacher_run(teacher_dir, tmp_path / "teacher.trec", candidates=[small["candidates"]])
    _, cands, _ = read_candidates(small["candidates"])
    assert {q: set(d) for q, d in run.items()} == {q: set(d) for q, d in cands.items()}
    assert read_run(tmp_path / "teacher.trec") == run and speed["pairs/s"] > 0
    assert open(tmp_path / "teacher.trec").readline().split()[-1] == "teacher-model"
    # one candidates file reranked to its full depth by `rerank eval --output`: the very same scores
    evaluate_runs(candidates=small["candidates"], qrels=small["qrels"], model=str(teacher_dir), depth=30,
                  output=tmp_path / "eval.trec", device="cpu")
    assert _same_scores(read_run(tmp_path / "eval.trec"), run)
    # a run file with its texts gives them too; several candidates files are merged
    again, _ = score_teacher_run(teacher_dir, tmp_path / "t2.trec", run=small["run"], queries=small["queries"],
                                 corpus=small["corpus"])
    assert _same_scores(again, run)
    merged, _ = score_teacher_run(teacher_dir, tmp_path / "t3.trec", candidates=[small["candidates"]] * 2)
    assert _same_scores(merged, run)


def test_teacher_run_arguments(teacher_dir, small, tmp_path):
    with pytest.raises(UsageError, match="give the candidates"):
        score_teacher_run(teacher_dir, tmp_path / "t.trec")
    with pytest.raises(UsageError, match="not both"):
        score_teacher_run(teacher_dir, tmp_path / "t.trec", candidates=[small["candidates"]], run=small["run"])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    from rerankers.errors import UnwritableOutputError
    with pytest.raises(UnwritableOutputError):
        score_teacher_run("no-such-model", blocker / "t.trec", candidates=[small["candidates"]])


def test_a_pruned_student_distilled_with_margin_mse_lowers_its_margin_mse(teacher_dir, small, tmp_path):
    from rerankers.models.prune import prune_folder

    teacher_file = tmp_path / "teacher.trec"
    teacher, _ = score_teacher_run(teacher_dir, teacher_file, candidates=[small["candidates"]])
    report = prune_folder(teacher_dir, tmp_path / "student", layers_keep=1)
    assert report.parameters_after < report.parameters_before
    student = CrossEncoder.from_pretrained(tmp_path / "student")
    assert len(student.backbone.model.encoder.layer) == 1
    cfg = resolve_config(None, _settings(tmp_path / "student", small, tmp_path / "run",
                                         teacher=str(teacher_file), loss="margin-mse", max_steps=25))
    # training starts from the student folder itself: its weights and its trained head
    start = build_model(cfg)
    docs = ["the capital of turkey", "a cat"]
    assert Reranker(start, device="cpu").score("capital", docs) == Reranker(student, device="cpu").score("capital",
                                                                                                         docs)
    before = _margin_mse(student, small["candidates"], teacher)
    result = train(cfg)
    after = _margin_mse(CrossEncoder.from_pretrained(result.model_dir), small["candidates"], teacher)
    assert after < 0.7 * before, (before, after)
    assert result.report["model"]["parameters"] == report.parameters_after


def test_a_saved_folder_rejects_flags_that_build_a_new_model(teacher_dir, sample_training, tmp_path):
    with pytest.raises(TrainingConfigError, match="--init: .* is a saved cross-encoder folder"):
        build_model(resolve_config(None, _settings(teacher_dir, sample_training, tmp_path / "x", init="random")))
    model = build_model(resolve_config(None, _settings(teacher_dir, sample_training, tmp_path / "x", max_length=100)))
    assert model.template.max_length == 100 and model.head_trained


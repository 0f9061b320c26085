"""Training settings: strict YAML, flags over the file, value checks naming the flag, resume rules."""
import pytest

from rerankers.errors import ResumeMismatchError, TrainingConfigError
from rerankers.train.config import TrainConfig, merge_resume, resolve_config

REQUIRED = {"backbone": "bert-base", "out": "runs/x", "train": ["a.json"]}


def test_yaml_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("backbone: mamba-130m\nout: runs/m\ntrain: cands.json\nlr: 3.0e-5\ngroup-size: 4\n")
    cfg = resolve_config(f, {"lr": 1e-4})
    assert cfg.backbone == "mamba-130m" and cfg.train == ["cands.json"]
    assert cfg.lr == 1e-4 and cfg.group_size == 4 and cfg.weight_decay == TrainConfig().weight_decay


def test_unknown_yaml_key_names_the_file_and_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("backbone: x\nout: y\ntrain: [z]\nlearning_rate: 1e-5\n")
    with pytest.raises(TrainingConfigError, match=r"c\.yaml: unknown key\(s\) 'learning_rate'"):
        resolve_config(f, {})


@pytest.mark.parametrize("text", ["- a\n- b\n", "backbone: [unclosed\n"])
def test_a_config_that_is_not_a_mapping(tmp_path, text):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(TrainingConfigError, match="c.yaml"):
        resolve_config(f, {})


@pytest.mark.parametrize("override, flag", [
    ({"group_size": 0}, "--group-size"), ({"lr": -1.0}, "--lr"), ({"schedule": "step"}, "--schedule"),
    ({"max_steps": 0}, "--max-steps"), ({"init": "zeros"}, "--init"), ({"lr": "fast"}, "lr"),
    ({"eval_every": 5}, "--eval-every"), ({"backbone": ""}, "--backbone"), ({"train": []}, "--train"),
    ({"recompute_mixer": True, "gradient_checkpointing": True}, "--recompute-mixer"),
    ({"recompute_mixer": "yes"}, "--recompute-mixer: one of auto, on, off"),
    ({"recompute_mixer": "on", "gradient_checkpointing": True}, "--recompute-mixer: not with"),
    ({"recompute_mixer": True, "compile": "default"}, "--recompute-mixer: eager steps only"),
])
def test_bad_values_name_their_flag(override, flag):
    with pytest.raises(TrainingConfigError, match=flag):
        resolve_config(None, {**REQUIRED, **override})


def test_resume_accepts_harmless_flags_and_rejects_the_rest():
    saved = resolve_config(None, REQUIRED)
    assert merge_resume(saved, {"log_every": 1}, "runs/x").log_every == 1
    assert merge_resume(saved, {"backbone": "bert-base"}, "runs/x").backbone == "bert-base"
    with pytest.raises(ResumeMismatchError, match="backbone='bert-base'"):
        merge_resume(saved, {"backbone": "mamba-130m"}, "runs/x")
    with pytest.raises(ResumeMismatchError, match="lr"):
        merge_resume(saved, {"lr": 1.0}, "runs/x")

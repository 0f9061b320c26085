"""What a LoRA run saves (tests/train/test_loop.py trains one and reloads it): the adapter state holds only the
adapters and the head, and the merged folder differs from the frozen base by a low-rank update only."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from rerankers.models.cross_encoder import CrossEncoder
from rerankers.reranker import Reranker
from rerankers.train.config import resolve_config
from rerankers.train.loop import build_model, train
from rerankers.train.lora import LORA_TARGETS, STATE_NAME, load_lora_state


def test_lora_saves_only_adapters_and_head_and_reloads_to_the_same_scores(tiny_bert_dir, sample_training, tmp_path):
    pytest.importorskip("peft")
    settings = dict(backbone=str(tiny_bert_dir), out=str(tmp_path / "run"), train=[sample_training["candidates"]],
                    train_qrels=[sample_training["qrels"]], group_size=4, queries_per_step=4, lr=1e-2,
                    warmup_steps=0, max_steps=3, max_length=96, seed=1, lora=2)
    result = train(resolve_config(None, settings))
    state = load_file(str(result.model_dir / STATE_NAME))
    adapters = [k for k in state if ".lora_A." in k or ".lora_B." in k]
    head = [k for k in state if k.startswith("head.")]
    assert adapters and head and len(adapters) + len(head) == len(state)  # nothing of the frozen base
    assert sum(t.numel() for t in state.values()) == result.report["model"]["trainable_parameters"]
    assert {k.split(".")[-1] for k in head} == {"weight", "bias"}

    # the merged folder: the base's target weights moved by a rank <= 2 update, every other weight unchanged
    base = CrossEncoder.from_pretrained(tiny_bert_dir).backbone.model.state_dict()
    saved = CrossEncoder.from_pretrained(result.model_dir)
    targets = LORA_TARGETS["bert"]
    for name, tensor in saved.backbone.model.state_dict().items():
        delta = (tensor - base[name]).double()
        module = name.rsplit(".", 2)[-2]
        if module in targets and name.endswith(".weight"):
            assert torch.linalg.matrix_rank(delta, rtol=1e-3) <= 2, name  # rtol: fp32 rounding of the merge
        else:
            assert not delta.any(), name
    assert any((t - base[n]).any() for n, t in saved.backbone.model.state_dict().items())

    # reloaded: a fresh frozen base wrapped the same way + the adapter state = the merged folder's scores
    live = build_model(resolve_config(None, settings))
    load_lora_state(live, result.model_dir)
    docs = ["ankara is the capital of turkey", "a cat", "the northern lights"]
    assert Reranker(live, device="cpu").score("capital of turkey", docs) == pytest.approx(
        Reranker(saved, device="cpu").score("capital of turkey", docs), rel=1e-5, abs=1e-5)

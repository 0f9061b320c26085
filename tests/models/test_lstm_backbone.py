"""The BiLSTM baseline: "ends" pooling is the concatenation of nn.LSTM's own final states, folders load strictly,
a preset copies a checkpoint's input embeddings, gradient checkpointing changes nothing, training lowers the loss.
(packed == padded and zero gradient across pairs: tests/models/test_packed_invariants.py, over every kind.)"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_checkpoints import (
    TOY_PAIRS,
    save_tiny_bert,
    save_tiny_decoder,
    save_tiny_lstm,
    save_tiny_mamba,
    save_tiny_t5,
    write_toy_training,
)

from rerankers.data.batching import pack_encoded
from rerankers.data.packing import pack_token_ids
from rerankers.errors import CheckpointMismatchError, ModelConfigError
from rerankers.models.cross_encoder import CrossEncoder
from rerankers.models.lstm import LSTMBackbone, LSTMConfig, input_embeddings
from rerankers.models.presets import PRESETS, Preset

QUERIES = ["what is a cat", "how many people live in berlin", "dogs"]
DOCS = ["a cat is an animal that purrs loudly at night", "berlin is the capital city of germany", "dogs bark"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_lstm(tmp_path_factory.mktemp("lstm") / "ckpt")


def test_pooling_is_the_concatenation_of_both_directions_final_states(folder):
    ce = CrossEncoder.from_pretrained(folder).double().eval()
    assert ce.pooling == "ends" and ce.template.use_token_types is False
    enc = ce.encode(QUERIES, DOCS)
    batch = pack_encoded(enc, range(len(QUERIES)))
    lstm = ce.backbone.lstm
    with torch.no_grad():
        finals = []
        for ids in enc.input_ids:  # each pair alone through nn.LSTM: h_n is (layers * 2, 1, H)
            _, (h_n, _) = lstm(ce.backbone.embedding(torch.tensor(ids))[None])
            finals.append(torch.cat([h_n[-2, 0], h_n[-1, 0]]))
        torch.testing.assert_close(ce(batch), ce.head(torch.stack(finals)), rtol=0, atol=1e-12)
    assert ce.backbone.hidden_size == 2 * lstm.hidden_size == ce.head.out_proj.in_features


def test_save_load_round_trip_is_exact_and_strict(folder, tmp_path):
    ce = CrossEncoder.from_pretrained(folder).eval()
    ce.save_pretrained(tmp_path / "saved")
    saved_cfg = json.loads((tmp_path / "saved" / "backbone" / "config.json").read_text())
    assert saved_cfg["model_type"] == "rerankers-lstm" and saved_cfg["num_layers"] == 2
    again = CrossEncoder.from_pretrained(tmp_path / "saved").eval()
    batch = pack_encoded(ce.encode(QUERIES, DOCS), range(len(QUERIES)))
    with torch.no_grad():
        assert torch.equal(ce(batch), again(batch))
    weights = tmp_path / "saved" / "backbone" / "model.safetensors"
    state = load_file(str(weights))
    del state["lstm.weight_hh_l1_reverse"]
    save_file(state, str(weights))
    with pytest.raises(CheckpointMismatchError, match=r"1 missing key\(s\): lstm.weight_hh_l1_reverse"):
        CrossEncoder.from_pretrained(tmp_path / "saved")
    cfg_file = tmp_path / "saved" / "backbone" / "config.json"
    cfg_file.write_text(json.dumps({**saved_cfg, "hidden_sise": 4}))
    with pytest.raises(ModelConfigError, match=r"backbone/config.json: unknown key\(s\) 'hidden_sise'"):
        CrossEncoder.from_pretrained(tmp_path / "saved")
    cfg_file.write_text(json.dumps({**saved_cfg, "num_layers": 0}))
    with pytest.raises(ModelConfigError, match="num_layers must be a positive integer, got 0"):
        CrossEncoder.from_pretrained(tmp_path / "saved")


def test_a_preset_copies_its_checkpoints_input_embeddings_and_random_does_not(tmp_path, monkeypatch):
    bert = save_tiny_bert(tmp_path / "bert", "bert", classification=False)
    shape = {"model_type": "rerankers-lstm", "vocab_size": 1, "embedding_size": 99, "hidden_size": 6, "num_layers": 1}
    monkeypatch.setitem(PRESETS, "tiny-lstm", Preset("tiny-lstm", "lstm", str(bert), architecture=shape))
    table = load_file(str(bert / "model.safetensors"))["embeddings.word_embeddings.weight"]
    ce = CrossEncoder.from_backbone("tiny-lstm").eval()
    config = ce.backbone.config
    assert torch.equal(ce.backbone.embedding.weight, table)
    assert (config.embedding_size, config.hidden_size, config.num_layers) == (table.shape[1], 6, 1)
    assert config.embeddings_from == str(bert) and ce.head_trained is False
    ce.save_pretrained(tmp_path / "saved")
    batch = pack_encoded(ce.encode(QUERIES, DOCS), range(len(QUERIES)))
    with torch.no_grad():
        assert torch.equal(ce(batch), CrossEncoder.from_pretrained(tmp_path / "saved").eval()(batch))
    random = CrossEncoder.from_backbone("tiny-lstm", init="random")
    assert random.backbone.config.embeddings_from is None and random.backbone.config.embedding_size == 99
    assert random.backbone.embedding.weight.shape[0] == len(random.tokenizer)


def test_input_embeddings_are_found_in_every_checkpoint_format(tmp_path):
    from rerankers.models.decoder import DecoderBackbone
    from rerankers.models.mamba import MambaBackbone
    cases = {"bert": (save_tiny_bert(tmp_path / "bert", "bert"), "bert.embeddings.word_embeddings.weight"),
             "mamba": (save_tiny_mamba(tmp_path / "mamba"), "backbone.embeddings.weight"),
             "t5": (save_tiny_t5(tmp_path / "t5"), "shared.weight")}
    for name, (ckpt, key) in cases.items():
        assert torch.equal(input_embeddings(ckpt), load_file(str(ckpt / "model.safetensors"))[key]), name
    neox = save_tiny_decoder(tmp_path / "neox", "gpt_neox")  # embed_in, not the LM head embed_out
    assert torch.equal(input_embeddings(neox), DecoderBackbone.from_pretrained(neox).get_input_embeddings().weight)
    assert torch.equal(input_embeddings(tmp_path / "mamba"),
                       MambaBackbone.from_pretrained(tmp_path / "mamba").embedding.weight)
    (tmp_path / "none").mkdir()
    save_file({"w": torch.zeros(2)}, str(tmp_path / "none" / "model.safetensors"))
    with pytest.raises(ModelConfigError, match="none: no input-embedding tensor found"):
        input_embeddings(tmp_path / "none")


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    backbone = LSTMBackbone(LSTMConfig(vocab_size=20, embedding_size=8, hidden_size=5, num_layers=2, dropout=0.0))
    batch = pack_token_ids([[1, 2, 3, 4], [5, 6], [7, 8, 9]])
    grads = []
    for flag in (False, True):
        backbone.zero_grad()
        backbone.gradient_checkpointing = flag
        backbone(batch).pow(2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in backbone.named_parameters()})
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])


def test_a_few_training_steps_lower_the_loss(folder):
    torch.manual_seed(0)
    ce = CrossEncoder.from_pretrained(folder).train()
    queries, docs = zip(*[(q, d) for q, pos in TOY_PAIRS for d in [pos, *[o for _, o in TOY_PAIRS if o != pos][:3]]])
    batch = pack_encoded(ce.encode(list(queries), list(docs)), range(len(queries)))
    optimizer = torch.optim.AdamW(ce.parameters(), lr=2e-2)
    losses = []
    for _ in range(12):
        scores = ce(batch).view(len(TOY_PAIRS), 4)  # the positive first in each group
        loss = torch.nn.functional.cross_entropy(scores, torch.zeros(len(TOY_PAIRS), dtype=torch.long))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2, losses


def test_rerank_train_runs_an_lstm_folder_with_gradient_checkpointing(folder, tmp_path):
    from rerankers.train.config import resolve_config
    from rerankers.train.loop import train

    data = write_toy_training(tmp_path / "toy.jsonl")
    cfg = resolve_config(None, dict(backbone=str(folder), out=str(tmp_path / "run"), train=[str(data)], group_size=4,
                                    queries_per_step=2, lr=1e-2, warmup_steps=1, max_steps=3, log_every=1,
                                    max_length=96, seed=1, gradient_checkpointing=True))
    result = train(cfg)
    assert len(result.history) == 3 and all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    trained = CrossEncoder.from_pretrained(tmp_path / "run" / "model")
    assert trained.backbone_type == "lstm" and trained.head_trained

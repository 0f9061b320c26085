"""monoT5 scorer against a direct transformers computation on a tiny random T5."""
from __future__ import annotations

import pytest
import torch
from tiny_checkpoints import save_tiny_t5

from rerankers.data.batching import pack_encoded
from rerankers.errors import CheckpointMismatchError
from rerankers.models.cross_encoder import CrossEncoder

QUERIES = ["what is a cat", "how many people live in berlin", "dogs"]
DOCS = ["a cat is an animal that purrs loudly at night", "berlin is the capital city of germany", "dogs bark"]


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    return save_tiny_t5(tmp_path_factory.mktemp("t5") / "ckpt")


def test_t5_scores_equal_direct_transformers_computation(t5_folder):
    from transformers import AutoTokenizer, T5ForConditionalGeneration
    ref = T5ForConditionalGeneration.from_pretrained(str(t5_folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(t5_folder))
    ce = CrossEncoder.from_pretrained(t5_folder).eval()
    texts = [f"Query: {q} Document: {d} Relevant:" for q, d in zip(QUERIES, DOCS)]
    enc = tok(texts, padding=True, return_tensors="pt")
    # the tokenizer adds no </s> itself here; monoT5 inputs end with it
    ids = [row[m.bool()].tolist() + [tok.eos_token_id] for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    ours = ce.encode(QUERIES, DOCS)
    assert ours.input_ids == ids
    true_id, false_id = tok.convert_tokens_to_ids(["true", "false"])
    L = max(map(len, ids))
    input_ids = torch.tensor([x + [tok.pad_token_id] * (L - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (L - len(x)) for x in ids])
    with torch.no_grad():
        logits = ref(input_ids=input_ids, attention_mask=mask,
                     decoder_input_ids=torch.zeros(3, 1, dtype=torch.long)).logits[:, 0]
        want = torch.log_softmax(logits[:, [true_id, false_id]], dim=-1)[:, 0]
        got = ce(pack_encoded(ours, range(3)))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert want.std() > 1e-3 and bool((got <= 0).all())


def test_t5_save_load_round_trip_and_strictness(t5_folder, tmp_path):
    from safetensors.torch import load_file, save_file
    ce = CrossEncoder.from_pretrained(t5_folder).eval()
    ce.save_pretrained(tmp_path / "saved")
    again = CrossEncoder.from_pretrained(tmp_path / "saved").eval()
    batch = pack_encoded(ce.encode(QUERIES, DOCS), range(3))
    with torch.no_grad():
        assert torch.equal(ce(batch), again(batch))
    wfile = tmp_path / "saved" / "backbone" / "model.safetensors"
    state = load_file(str(wfile))
    state.pop("encoder.final_layer_norm.weight")
    save_file(state, str(wfile), metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError, match="encoder.final_layer_norm.weight"):
        CrossEncoder.from_pretrained(tmp_path / "saved")

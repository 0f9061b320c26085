"""Under bf16 autocast the last step of scoring (the head; T5's true/false logits) runs in fp32:
bf16 keeps 8 significant bits, so scores of large magnitude would collapse into ties."""
from __future__ import annotations

import pytest
import torch
from tiny_checkpoints import BUILDERS, save_tiny_t5

from rerankers.data.batching import pack_encoded
from rerankers.models.cross_encoder import CrossEncoder

QUERY = "what is a cat"
DOCS = ["a cat is an animal that purrs", "dogs bark loudly at night", "the sun is hot", "fish swim in the river",
        "cat", "water boils at 100 degrees celsius"]


def _autocast_scores_and_input(ce: CrossEncoder, module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores under bf16 autocast, and the input ``module`` received on the way."""
    seen = []
    hook = module.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].detach()))
    batch = pack_encoded(ce.encode([QUERY] * len(DOCS), DOCS), range(len(DOCS)))
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            scores = ce(batch)
    finally:
        hook.remove()
    return scores, seen[0]


@pytest.mark.parametrize("kind", ["bert", "mamba"])
def test_head_runs_in_fp32_under_autocast(kind, tmp_path):
    torch.manual_seed(0)
    ce = CrossEncoder.from_pretrained(BUILDERS[kind](tmp_path / kind)).eval()
    with torch.no_grad():
        ce.head.out_proj.bias.fill_(64.0)  # scores around 64, where bf16 steps by 0.5
    got, pooled = _autocast_scores_and_input(ce, ce.head)
    with torch.no_grad():
        want = ce.head(pooled.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_t5_true_false_logits_are_fp32_under_autocast(tmp_path):
    ce = CrossEncoder.from_pretrained(save_tiny_t5(tmp_path / "t5")).eval()
    t, f = ce.backbone.true_token_id, ce.backbone.false_token_id
    lm_head = ce.backbone.model.lm_head
    with torch.no_grad():  # both logits in the hundreds (bf16 steps of 1-2), their difference small
        shift = torch.randn(lm_head.weight.shape[1], generator=torch.Generator().manual_seed(0)) * 100
        lm_head.weight[t] += shift
        lm_head.weight[f] += shift
    got, state = _autocast_scores_and_input(ce, lm_head)
    logits = state[:, 0].float() @ lm_head.weight[[t, f]].detach().float().T
    want = torch.log_softmax(logits, dim=-1)[:, 0]
    assert got.dtype == torch.float32 and logits.abs().mean() > 64
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)

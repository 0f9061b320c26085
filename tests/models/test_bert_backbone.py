"""BERT family: our packed/padded paths against transformers' own models on tiny random checkpoints."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from tiny_checkpoints import save_tiny_bert

from rerankers.data.batching import pack_encoded
from rerankers.errors import CheckpointMismatchError, ModelConfigError, UnknownBackboneError
from rerankers.models.bert import BertBackbone
from rerankers.models.cross_encoder import CrossEncoder
from rerankers.models.varlen_attention import per_sequence_attention, varlen_attention

QUERIES = ["what is a cat", "how many people live in berlin", "dogs"]
DOCS = ["a cat is an animal that purrs loudly at night", "berlin is the capital city of germany", "dogs bark"]


@pytest.mark.parametrize("kind", ["bert", "electra", "roberta"])
def test_hidden_states_equal_transformers_model(kind, tmp_path):
    from transformers import AutoModel
    folder = save_tiny_bert(tmp_path / kind, kind, classification=False)
    ours = BertBackbone.from_pretrained(folder).double().eval()
    ref = AutoModel.from_pretrained(str(folder), attn_implementation="eager").double().eval()
    ce_tok = CrossEncoder.from_pretrained(folder).tokenizer
    enc = ce_tok(QUERIES, DOCS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = ref(**enc).last_hidden_state
        tt = enc.get("token_type_ids")
        padded = ours.forward_padded(enc["input_ids"], enc["attention_mask"], tt)
        mask = enc["attention_mask"].bool()
        lengths = mask.sum(1).tolist()
        from rerankers.data.packing import pack_token_ids
        batch = pack_token_ids([enc["input_ids"][i, :n].tolist() for i, n in enumerate(lengths)],
                               None if tt is None else [tt[i, :n].tolist() for i, n in enumerate(lengths)])
        packed = ours(batch)
    torch.testing.assert_close(padded[mask], want[mask], rtol=0, atol=1e-10)
    torch.testing.assert_close(packed, want[mask], rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", ["bert", "electra", "roberta"])
def test_sequence_classification_checkpoint_gives_its_logits(kind, tmp_path):
    """The format of cross-encoder/ms-marco-MiniLM-L6-v2 (num_labels=1): same scores as transformers."""
    from transformers import AutoModelForSequenceClassification
    folder = save_tiny_bert(tmp_path / kind, kind, classification=True)
    ref = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    ce = CrossEncoder.from_pretrained(folder).eval()
    enc = ce.tokenizer(QUERIES, DOCS, padding=True, return_tensors="pt")
    ours_enc = ce.encode(QUERIES, DOCS)
    real = [enc["attention_mask"][i].bool() for i in range(3)]
    assert ours_enc.input_ids == [enc["input_ids"][i][real[i]].tolist() for i in range(3)]
    if kind != "roberta":  # segment ids as BERT's tokenizer makes them
        assert ours_enc.token_type_ids == [enc["token_type_ids"][i][real[i]].tolist() for i in range(3)]
    with torch.no_grad():
        want = ref(**enc).logits[:, 0]
        got = ce(pack_encoded(ours_enc, range(3)))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert want.std() > 1e-3


def test_a_tokenizer_without_token_types_scores_as_in_transformers(tmp_path):
    """A BERT tokenizer configured without token_type_ids: transformers feeds segment 0 everywhere, so must we
    (issue 10: segment 1 was fed to the document, and the scores differed)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    folder = save_tiny_bert(tmp_path / "hf", "bert", classification=True)
    tok = AutoTokenizer.from_pretrained(str(folder), model_input_names=["input_ids", "attention_mask"])
    tok.save_pretrained(str(folder))
    ref = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    ce = CrossEncoder.from_pretrained(folder).eval()
    enc = ce.tokenizer(QUERIES, DOCS, padding=True, return_tensors="pt")
    assert "token_type_ids" not in enc
    with torch.no_grad():
        want = ref(**enc).logits[:, 0]
        got = ce(pack_encoded(ce.encode(QUERIES, DOCS), range(3)))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "electra", "roberta"])
def test_two_label_classification_checkpoint_scores_logit_of_relevant_minus_not(kind, tmp_path, caplog):
    """num_labels=2 (a binary relevance classifier): score = logit[1] - logit[0], the log-odds of label 1,
    ranking as softmax(logits)[1]; the head counts as trained."""
    from transformers import AutoModelForSequenceClassification
    folder = save_tiny_bert(tmp_path / kind, kind, classification=True, num_labels=2)
    ref = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with caplog.at_level(logging.WARNING):
        ce = CrossEncoder.from_pretrained(folder).eval()
    assert ce.head_trained and not [r for r in caplog.records if "not trained" in r.getMessage()]
    enc = ce.tokenizer(QUERIES, DOCS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = ref(**enc).logits
        got = ce(pack_encoded(ce.encode(QUERIES, DOCS), range(3)))
    torch.testing.assert_close(got, logits[:, 1] - logits[:, 0], rtol=0, atol=1e-5)
    assert torch.equal(got.argsort(), logits.softmax(-1)[:, 1].argsort())


def test_save_and_load_round_trip_is_exact(tmp_path):
    ce = CrossEncoder.from_pretrained(save_tiny_bert(tmp_path / "hf", "bert")).eval()
    ce.save_pretrained(tmp_path / "saved")
    cfg = json.loads((tmp_path / "saved" / "reranker_config.json").read_text())
    assert cfg["backbone_type"] == "bert" and cfg["template"]["name"] == "bert"
    assert cfg["template"]["max_length"] == 96 and cfg["template"]["max_query_tokens"] == 64
    again = CrossEncoder.from_pretrained(tmp_path / "saved").eval()
    batch = pack_encoded(ce.encode(QUERIES, DOCS), range(3))
    with torch.no_grad():
        assert torch.equal(ce(batch), again(batch))


def test_checkpoint_config_mismatch_names_keys(tmp_path):
    from safetensors.torch import load_file, save_file
    ce = CrossEncoder.from_pretrained(save_tiny_bert(tmp_path / "hf", "bert"))
    ce.save_pretrained(tmp_path / "saved")
    # 1) a backbone tensor is missing and an unknown one is present
    wfile = tmp_path / "saved" / "backbone" / "model.safetensors"
    state = load_file(str(wfile))
    state.pop("encoder.layer.1.output.dense.weight")
    state["encoder.layer.9.extra.weight"] = torch.zeros(2)
    save_file(state, str(wfile), metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError) as e:
        CrossEncoder.from_pretrained(tmp_path / "saved")
    assert "encoder.layer.1.output.dense.weight" in str(e.value)
    assert "encoder.layer.9.extra.weight" in str(e.value)
    # 2) the config says another size than the weights
    ce.save_pretrained(tmp_path / "saved2")
    cfg_file = tmp_path / "saved2" / "reranker_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["head"]["activation"] = "none"  # the head then has no dense layer: head.dense.* unexpected
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match="head.dense.weight"):
        CrossEncoder.from_pretrained(tmp_path / "saved2")



@pytest.mark.parametrize("kind", ["bert", "t5"])
def test_missing_or_unreadable_weights_are_loading_errors(kind, tmp_path):
    from tiny_checkpoints import BUILDERS

    from rerankers.errors import CheckpointNotFoundError, ModelLoadingError
    folder = BUILDERS[kind](tmp_path / kind)
    weights = folder / "model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadingError, match=r"model.safetensors: cannot read the weights"):
        CrossEncoder.from_pretrained(folder)
    weights.unlink()
    with pytest.raises(CheckpointNotFoundError, match="no weights found"):
        CrossEncoder.from_pretrained(folder)


def test_weights_without_read_permission_are_reported_as_such(shared_tmp, unprivileged):
    """A weights file this user may not read is a CheckpointPermissionError (a PermissionError) naming it, one line,
    never "missing" (issue 10: safetensors says No such file). As root, checked in a child that drops to nobody."""
    from rerankers.errors import CheckpointPermissionError
    hf = save_tiny_bert(shared_tmp / "hf", "bert")
    saved = shared_tmp / "saved"
    CrossEncoder.from_pretrained(hf).save_pretrained(saved)
    CrossEncoder.from_pretrained(saved)  # the parent imports all that loading needs: the child cannot import
    for path in shared_tmp.rglob("*"):  # all readable to the other user whatever the umask, but for these two
        path.chmod(0o755 if path.is_dir() else 0o644)
    locked = [hf / "model.safetensors", saved / "backbone" / "model.safetensors"]

    def load_both() -> str:
        lines = []
        for folder in (hf, saved):
            try:
                CrossEncoder.from_pretrained(folder)
                lines.append("loaded")
            except CheckpointPermissionError as e:
                lines.append(f"{isinstance(e, PermissionError)} {e}")
        return "\n".join(lines)
    for file in locked:
        file.chmod(0)
    try:
        lines = unprivileged(load_both).splitlines()
    finally:
        for file in locked:
            file.chmod(0o644)
    assert lines == [f"True {f}: permission denied: this user may not read the weights (check the file's owner "
                     "and mode)" for f in locked]


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(UnknownBackboneError) as e:
        CrossEncoder.from_pretrained("bert-gigantic")
    msg = str(e.value)
    for name in ("bert-base", "electra-base", "minilm-l6", "t5-base", "mamba-130m"):
        assert name in msg


def test_varlen_attention_cpu_fallback_matches_per_sequence_reference():
    torch.manual_seed(0)
    lens = [3, 7, 1, 5]
    cu = torch.tensor([0, 3, 10, 11, 16], dtype=torch.int32)
    q, k, v = (torch.randn(sum(lens), 2, 4, dtype=torch.float64) for _ in range(3))
    out = varlen_attention(q, k, v, cu, max(lens))
    torch.testing.assert_close(out, per_sequence_attention(q, k, v, cu))
    # the second sequence alone, with plain softmax attention
    qi, ki, vi = q[3:10], k[3:10], v[3:10]
    att = torch.softmax(torch.einsum("qhd,khd->hqk", qi, ki) / 2.0, dim=-1)
    torch.testing.assert_close(out[3:10], torch.einsum("hqk,khd->qhd", att, vi))


def test_presets_resolve_without_importing_torch():
    import subprocess
    import sys
    code = ("import sys, rerankers.models.presets as p; assert 'mamba-130m' in p.PRESETS; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("kind", ["bert", "electra", "roberta"])
def test_export_to_transformers_gives_the_same_scores(kind, tmp_path):
    """Our saved cross-encoder -> AutoModelForSequenceClassification: the same logits to 1e-5 (issue 10)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rerankers.models.bert import export_sequence_classification

    ce = CrossEncoder.from_pretrained(save_tiny_bert(tmp_path / "hf", kind, classification=False)).eval()
    torch.manual_seed(3)
    with torch.no_grad():  # a head that is not the pooler's copy, so that a wrong mapping shows
        for p in ce.head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ce.save_pretrained(tmp_path / "ours")
    ours = CrossEncoder.from_pretrained(tmp_path / "ours").eval()
    export_sequence_classification(ours, tmp_path / "exported")
    hf = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "exported")).eval()
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "exported"))
    queries = ["what is a cat", "how many people live in berlin"]
    docs = ["a cat is an animal that purrs", "berlin is the capital city of germany"]
    enc = ours.encode(queries, docs)
    with torch.no_grad():
        mine = ours(pack_encoded(enc, [0, 1]))
        inputs = tok(queries, docs, padding=True, return_tensors="pt")
        theirs = hf(**inputs).logits[:, 0]
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "electra", "roberta"])
def test_rerank_export_loads_in_sentence_transformers_with_the_same_scores(kind, tmp_path, capsys):
    """`rerank export` -> sentence-transformers' CrossEncoder(path): its logits are ours to 1e-5, and its default
    predict (a sigmoid for one label) is their sigmoid (issue 10)."""
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed here")
    from rerankers.cli import main
    ce = CrossEncoder.from_pretrained(save_tiny_bert(tmp_path / "hf", kind, classification=True)).eval()
    ce.save_pretrained(tmp_path / "ours")
    assert main(["export", "--model", str(tmp_path / "ours"), "--out", str(tmp_path / "exported")]) == 0
    theirs = st.CrossEncoder(str(tmp_path / "exported"), device="cpu")
    pairs = list(zip(QUERIES, DOCS))
    with torch.no_grad():
        ours = ce(pack_encoded(ce.encode(QUERIES, DOCS), range(len(pairs))))
    logits = torch.as_tensor(theirs.predict(pairs, activation_fn=torch.nn.Identity(), show_progress_bar=False))
    torch.testing.assert_close(logits.float(), ours, rtol=1e-5, atol=1e-5)
    default = torch.as_tensor(theirs.predict(pairs, show_progress_bar=False))
    torch.testing.assert_close(default.float(), torch.sigmoid(ours), rtol=1e-5, atol=1e-5)


def test_export_refuses_what_has_no_classification_form(tmp_path):
    from rerankers.models.bert import export_sequence_classification

    ce = CrossEncoder.from_pretrained(save_tiny_bert(tmp_path / "hf", "bert"))
    ce.set_pooling("mean")
    with pytest.raises(ModelConfigError, match="\\[CLS\\] pooling"):
        export_sequence_classification(ce, tmp_path / "x")


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_attention_equal_lengths_is_one_dense_sdpa_call(monkeypatch, causal):
    """A pack whose sequences all have max_seqlen tokens goes to one SDPA call over (S, heads, L, d) (cuDNN's kernel
    on the GPU): output and q/k/v gradients equal the per-sequence reference; a ragged pack of the same T does not."""
    import torch.nn.functional as F

    from rerankers.models import varlen_attention as va
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(va.F, "scaled_dot_product_attention",
                        lambda q, *a, **kw: calls.append(q.shape) or sdpa(q, *a, **kw))
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(12, 2, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    g = torch.randn(12, 2, 4, generator=gen, dtype=torch.float64)
    cu = torch.tensor([0, 4, 8, 12], dtype=torch.int32)
    out = varlen_attention(q, k, v, cu, 4, causal=causal)
    assert calls == [(3, 2, 4, 4)]
    grads = torch.autograd.grad(out, (q, k, v), g)
    calls.clear()
    want = per_sequence_attention(q, k, v, cu, causal=causal)
    assert len(calls) == 3
    torch.testing.assert_close(out, want)
    for a, b in zip(grads, torch.autograd.grad(want, (q, k, v), g)):
        torch.testing.assert_close(a, b)
    calls.clear()
    ragged = torch.tensor([0, 2, 8, 12], dtype=torch.int32)  # T = 12 = 3 x 4, but max is 6: not dense
    got = varlen_attention(q, k, v, ragged, 6, causal=causal)
    assert [c[1] for c in calls] == [2, 6, 4]  # one call per sequence
    torch.testing.assert_close(got, per_sequence_attention(q, k, v, ragged, causal=causal))


def test_packed_attention_backward_makes_no_select_copies():
    """The packed attention function takes (1, heads, T, d) views of the projections. Its backward must not pass
    through a select (``x[0]``): a select's backward zero-fills a (1, heads, T, d) gradient and copies into it,
    six strided copies a BERT layer (2.5 ms a bert-base step at L2048 x 8 on an H200, sixth session)."""
    from rerankers.models.varlen_attention import _hf_attention_forward
    gen = torch.Generator().manual_seed(0)
    T, H, d = 12, 2, 4
    proj = torch.randn(T, 3 * H * d, generator=gen, dtype=torch.float64, requires_grad=True)
    q, k, v = (x.view(1, T, H, d).transpose(1, 2) for x in proj.split(H * d, dim=-1))
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    out, _ = _hf_attention_forward(None, q, k, v, None, cu_seqlens=cu, max_seqlen=7)
    names, todo, seen = set(), [out.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    assert not any(n.startswith("SelectBackward") for n in names), sorted(names)
    assert any(n.startswith("SqueezeBackward") for n in names)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch's flash kernels run on CUDA only")
@pytest.mark.parametrize("causal", [False, True])
def test_direct_flash_path_matches_the_fp32_reference_with_every_gradient(causal, monkeypatch):
    """The eager CUDA path (torch's flash kernels from our autograd.Function) against the fp32 per-sequence
    reference on ragged bf16 packs, output and q/k/v gradients; and its dropout drops in the backward what the
    forward dropped (out is linear in v for a fixed mask: sum(g * out) == sum(v * dv), here with g = out)."""
    from rerankers.kernels.varlen import cu_seqlens_from_lengths
    from rerankers.models import varlen_attention as va
    monkeypatch.setattr(va, "_flash_varlen", None)  # the direct path even where flash-attn is installed
    assert va.varlen_backend(torch.device("cuda"), torch.bfloat16) == "flash_direct"
    g = torch.Generator().manual_seed(7)
    lens = [1, 37, 255, 64, 2, 130]
    T = sum(lens)
    q, k, v = (torch.randn(T, 4, 64, generator=g).cuda().bfloat16().requires_grad_() for _ in range(3))
    cu = cu_seqlens_from_lengths(lens).cuda()
    dout = torch.randn(T, 4, 64, generator=g).cuda().bfloat16()
    out = varlen_attention(q, k, v, cu, max(lens), causal=causal)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref = [x.detach().float().requires_grad_() for x in (q, k, v)]
    want = per_sequence_attention(*ref, cu, causal=causal)
    want_grads = torch.autograd.grad(want, ref, dout.float())
    for name, a, b in zip(("out", "dq", "dk", "dv"), (out, *grads), (want, *want_grads)):
        assert (a.float() - b).norm() / b.norm() < 2e-2, name
    # with g = out: sum(v * dv) == sum(out^2) > 0 for the forward's own mask; a backward with another mask (a
    # second draw's, giving out2) would give sum(out * out2), about 20% less at this dropout
    out, out2 = (varlen_attention(q, k, v, cu, max(lens), dropout_p=0.2, causal=causal) for _ in range(2))
    (dv,) = torch.autograd.grad(out, (v,), out.detach())
    own = out.float().square().sum()
    assert abs((v.float() * dv.float()).sum() - own) <= 1e-2 * own
    assert abs((out.float() * out2.float()).sum() - own) > 5e-2 * own  # the check can fail
    assert va._direct_ok is True  # it ran, no fallback to varlen_attn

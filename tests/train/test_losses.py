"""The training losses against direct formulas written out in plain Python floats (float64).

Every reference below loops over groups, documents and pairs with ``math``; nothing reuses the
vectorised code. LambdaLoss's LambdaRank weight is checked against |dNDCG(@k)| measured by really
swapping two documents of the ranking and recomputing NDCG.
"""
from __future__ import annotations

import math

import pytest
import torch

from rerankers.errors import TrainingConfigError
from rerankers.train.losses import LOSSES, build_loss
from rerankers.train.losses.lambdaloss import LambdaLoss

NAMES = ["lce", "bce", "margin-mse", "ranknet", "listnet", "lambdaloss"]


# ---- data ---------------------------------------------------------------------------------------
def make(groups: int = 4, n: int = 6, seed: int = 0, dtype=torch.float32):
    """Random scores / teacher and graded labels with column 0 a group's maximal label (sampler shape)."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(groups, n, generator=gen, dtype=torch.float64).to(dtype)
    teacher = (3 * torch.randn(groups, n, generator=gen, dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, 4, (groups, n), generator=gen).to(dtype)
    labels[:, 0] = labels.max(dim=1).values.clamp(min=1)
    return scores, labels, teacher


def rows(t: torch.Tensor) -> list[list[float]]:
    return [[float(v) for v in row] for row in t.double()]


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


# ---- plain-Python references --------------------------------------------------------------------
def ref_lce(scores, labels=None):
    out = []
    for s in rows(scores):
        out.append(-math.log(math.exp(s[0]) / sum(math.exp(v) for v in s)))
    return sum(out) / len(out)


def ref_bce(scores, labels, pos_weight=1.0):
    total, count = 0.0, 0
    for s, y in zip(rows(scores), rows(labels)):
        for v, lab in zip(s, y):
            p = 1.0 / (1.0 + math.exp(-v))
            z = 1.0 if lab > 0 else 0.0
            total += -(pos_weight * z * math.log(p) + (1 - z) * math.log(1 - p))
            count += 1
    return total / count


def ref_margin_mse(scores, teacher, all_pairs=False):
    terms = []
    for s, t in zip(rows(scores), rows(teacher)):
        n = len(s)
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)] if all_pairs else [(0, j) for j in range(1, n)]
        for i, j in pairs:
            terms.append(((s[i] - s[j]) - (t[i] - t[j])) ** 2)
    return sum(terms) / len(terms)


def ref_ranknet(scores, labels, sigma=1.0):
    group_losses = []
    for s, y in zip(rows(scores), rows(labels)):
        pair_losses = []
        for i in range(len(s)):
            for j in range(len(s)):
                if y[i] > y[j]:
                    pair_losses.append(math.log(1 + math.exp(-sigma * (s[i] - s[j]))))
        if pair_losses:
            group_losses.append(sum(pair_losses) / len(pair_losses))
    return sum(group_losses) / len(group_losses) if group_losses else 0.0


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def ref_listnet(scores, target):
    group_losses = []
    for s, y in zip(rows(scores), rows(target)):
        if max(y) == min(y):
            continue
        p, q = softmax(y), softmax(s)
        group_losses.append(-sum(pi * math.log(qi) for pi, qi in zip(p, q)))
    return sum(group_losses) / len(group_losses) if group_losses else 0.0


def dcg(gains_in_order, k):
    return sum(g / math.log2(2 + r) for r, g in enumerate(gains_in_order[:k]))


def ndcg(labels, order, k):
    gains = [2 ** max(v, 0) - 1 for v in labels]
    ideal = dcg(sorted(gains, reverse=True), k)
    return dcg([gains[d] for d in order], k) / ideal if ideal > 0 else 0.0


def ref_lambdaloss(scores, labels, weighting="ndcg-loss2++", k=None, sigma=1.0, mu=10.0):
    group_losses = []
    for s, y in zip(rows(scores), rows(labels)):
        n = len(s)
        kk = n if k is None else min(k, n)
        order = sorted(range(n), key=lambda d: -s[d])            # stable: ties keep column order
        rank = {d: r + 1 for r, d in enumerate(order)}
        ideal = dcg(sorted((2 ** max(v, 0) - 1 for v in y), reverse=True), kk)
        G = [(2 ** max(v, 0) - 1) / ideal if ideal > 0 else 0.0 for v in y]
        loss, any_pair = 0.0, False
        for i in range(n):
            for j in range(n):
                if not (y[i] > y[j] and min(rank[i], rank[j]) <= kk):
                    continue
                any_pair = True
                swapped = list(order)
                a, b = rank[i] - 1, rank[j] - 1
                swapped[a], swapped[b] = swapped[b], swapped[a]
                rho = abs(ndcg(y, order, kk) - ndcg(y, swapped, kk))    # |dNDCG@k| by brute force
                d = abs(rank[i] - rank[j])
                delta = abs(G[i] - G[j]) * (1 / math.log2(1 + d) - 1 / math.log2(2 + d))
                w = {"ndcg-loss2++": rho + mu * delta, "lambdarank": rho, "ndcg-loss2": delta}[weighting]
                loss += -w * log_sigmoid(sigma * (s[i] - s[j])) / math.log(2)
        if any_pair:
            group_losses.append(loss)
    return sum(group_losses) / len(group_losses) if group_losses else 0.0


def close(value: torch.Tensor, expected: float, tol: float = 1e-5):
    assert value.dim() == 0
    value = value.item()
    assert math.isfinite(value)
    assert value == pytest.approx(expected, rel=tol, abs=tol)


# ---- registry and build_loss --------------------------------------------------------------------
def test_registry_names_and_attributes():
    assert list(LOSSES) == NAMES
    for name, cls in LOSSES.items():
        assert cls.name == name
        assert isinstance(build_loss(name), torch.nn.Module)
    assert [n for n, c in LOSSES.items() if c.needs_teacher] == ["margin-mse"]
    assert build_loss("listnet", use_teacher=True).needs_teacher is True
    assert build_loss("listnet").needs_teacher is False


def test_build_loss_passes_kwargs():
    loss = build_loss("lambdaloss", weighting="lambdarank", k=3, sigma=2.0, mu=1.0)
    assert (loss.weighting, loss.k, loss.sigma, loss.mu) == ("lambdarank", 3, 2.0, 1.0)
    assert build_loss("bce", pos_weight=7).pos_weight == 7.0
    assert build_loss("margin-mse", all_pairs=True).all_pairs is True


def test_build_loss_unknown_name_lists_known():
    with pytest.raises(TrainingConfigError) as err:
        build_loss("softmax")
    msg = str(err.value)
    assert "'softmax'" in msg and all(n in msg for n in NAMES)


@pytest.mark.parametrize("name, kwargs, word", [
    ("lce", {"temperature": 2.0}, "temperature"),
    ("ranknet", {"sigmaa": 1.0}, "sigmaa"),
    ("bce", {"pos_weight": 0.0}, "pos_weight"),
    ("bce", {"pos_weight": -1.0}, "pos_weight"),
    ("ranknet", {"sigma": float("nan")}, "sigma"),
    ("lambdaloss", {"weighting": "ndcg"}, "weighting"),
    ("lambdaloss", {"k": 0}, "k must"),
    ("lambdaloss", {"k": 2.5}, "k must"),
    ("lambdaloss", {"mu": -1.0}, "mu"),
    ("lambdaloss", {"sigma": 0}, "sigma"),
])
def test_build_loss_bad_kwargs(name, kwargs, word):
    with pytest.raises(TrainingConfigError) as err:
        build_loss(name, **kwargs)
    assert word in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_shape_errors(name):
    loss = build_loss(name)
    scores, labels, teacher = make(2, 4)
    with pytest.raises(ValueError):
        loss(scores[0], labels[0], teacher[0])
    with pytest.raises(ValueError):
        loss(scores, labels[:, :3], teacher)


# ---- each loss against its formula --------------------------------------------------------------
def test_lce_matches_formula():
    scores, labels, _ = make()
    close(build_loss("lce")(scores, labels), ref_lce(scores))


def test_lce_stable_for_large_scores():
    scores = torch.tensor([[1000.0, 990.0, -1000.0], [-500.0, -480.0, -510.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    # direct formula with the max subtracted (the plain one overflows in float64 too)
    expected = (math.log(1 + math.exp(-10) + math.exp(-2000)) + (20 + math.log(1 + math.exp(-20) + math.exp(-30)))) / 2
    close(build_loss("lce")(scores, labels), expected)


def test_lce_checks_column_zero():
    loss = build_loss("lce")
    scores = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="group 1"):
        loss(scores, torch.tensor([[1.0, 0.0, 0.0], [1.0, 2.0, 0.0]]))
    with pytest.raises(ValueError, match="column 0"):
        loss(scores, torch.zeros(2, 3))                      # no positive at all
    ties = torch.tensor([[2.0, 2.0, 0.0], [1.0, 0.0, 1.0]])  # a tie with column 0 is allowed
    close(loss(scores, ties), math.log(3))


def test_bce_matches_formula():
    scores, labels, _ = make()
    close(build_loss("bce")(scores, labels), ref_bce(scores, labels))
    close(build_loss("bce", pos_weight=5.0)(scores, labels), ref_bce(scores, labels, pos_weight=5.0))


def test_bce_targets_are_label_above_zero():
    scores = torch.tensor([[0.3, -0.2, 1.5]])
    graded = torch.tensor([[3.0, 0.0, 1.0]])
    binary = torch.tensor([[1.0, 0.0, 1.0]])
    loss = build_loss("bce")
    assert float(loss(scores, graded)) == pytest.approx(float(loss(scores, binary)))
    close(loss(scores, graded), ref_bce(scores, binary))


@pytest.mark.parametrize("all_pairs", [False, True])
def test_margin_mse_matches_formula(all_pairs):
    scores, labels, teacher = make()
    loss = build_loss("margin-mse", all_pairs=all_pairs)
    close(loss(scores, labels, teacher), ref_margin_mse(scores, teacher, all_pairs))


def test_margin_mse_shift_invariant_and_errors():
    scores, labels, teacher = make(3, 5)
    loss = build_loss("margin-mse")
    close(loss(teacher + 4.0, labels, teacher), 0.0)        # same margins: zero loss
    with pytest.raises(ValueError, match="teacher"):
        loss(scores, labels)
    with pytest.raises(ValueError, match="teacher"):
        loss(scores, labels, torch.full_like(teacher, float("nan")))
    with pytest.raises(ValueError, match="at least 2"):
        loss(scores[:, :1], labels[:, :1], teacher[:, :1])


@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_ranknet_matches_double_loop(sigma):
    scores, labels, _ = make(5, 7, seed=3)
    labels[1] = 0.0                                          # no pair: must not dilute the mean
    labels[2, 1:4] = labels[2, 0]                            # ties make no pair
    close(build_loss("ranknet", sigma=sigma)(scores, labels), ref_ranknet(scores, labels, sigma))


@pytest.mark.parametrize("use_teacher", [False, True])
def test_listnet_matches_formula(use_teacher):
    scores, labels, teacher = make(4, 5, seed=5)
    labels[3] = 0.0                                          # constant target: skipped
    loss = build_loss("listnet", use_teacher=use_teacher)
    expected = ref_listnet(scores, teacher if use_teacher else labels)
    close(loss(scores, labels, teacher if use_teacher else None), expected)
    if use_teacher:
        with pytest.raises(ValueError, match="teacher"):
            loss(scores, labels)


@pytest.mark.parametrize("weighting", ["ndcg-loss2++", "lambdarank", "ndcg-loss2"])
@pytest.mark.parametrize("k", [None, 3])
def test_lambdaloss_matches_paper(weighting, k):
    scores, labels, _ = make(5, 7, seed=7)
    labels[2] = 0.0
    labels[3, :4] = 2.0
    loss = build_loss("lambdaloss", weighting=weighting, k=k, sigma=1.5, mu=4.0)
    close(loss(scores, labels), ref_lambdaloss(scores, labels, weighting, k, sigma=1.5, mu=4.0))


def test_lambdaloss_lambdarank_weight_is_delta_ndcg():
    scores, labels, _ = make(1, 6, seed=11)
    for k in (None, 2):
        weights, pairs = LambdaLoss(weighting="lambdarank", k=k).pair_weights(scores.double(), labels.double())
        s, y = rows(scores)[0], rows(labels)[0]
        order = sorted(range(6), key=lambda d: -s[d])
        rank = {d: r for r, d in enumerate(order)}
        for i in range(6):
            for j in range(6):
                swapped = list(order)
                swapped[rank[i]], swapped[rank[j]] = swapped[rank[j]], swapped[rank[i]]
                d_ndcg = abs(ndcg(y, order, k or 6) - ndcg(y, swapped, k or 6))
                assert float(weights[0, i, j]) == pytest.approx(d_ndcg, abs=1e-12)


def test_lambdaloss_lower_when_ranking_is_right():
    labels = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    good = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    loss = build_loss("lambdaloss")
    assert float(loss(good, labels)) < float(loss(good.flip(1), labels))


# ---- properties shared by the losses ------------------------------------------------------------
def inputs_for(name):
    scores, labels, teacher = make(3, 5, seed=13)
    return scores, labels, (teacher if name == "margin-mse" else None)


@pytest.mark.parametrize("name", ["bce", "ranknet", "listnet", "lambdaloss"])
def test_label_based_losses_ignore_column_order(name):
    scores, labels, _ = inputs_for(name)
    perm = torch.tensor([3, 0, 4, 2, 1])
    loss = build_loss(name)
    assert float(loss(scores[:, perm], labels[:, perm])) == pytest.approx(float(loss(scores, labels)), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    scores, labels, teacher = make(2, 4, seed=17, dtype=torch.float64)
    loss = build_loss(name)
    t = teacher if loss.needs_teacher else None
    scores.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: loss(s, labels, t), (scores,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_scores_compute_in_fp32(name):
    scores, labels, teacher = inputs_for(name)
    loss = build_loss(name)
    low = scores.bfloat16()
    out = loss(low, labels, teacher)
    assert out.dtype == torch.float32
    assert float(out) == pytest.approx(float(loss(low.float(), labels, teacher)), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_ties_give_finite_loss_and_grad(name):
    scores = torch.zeros(2, 4, requires_grad=True)                    # every score tied
    labels = torch.tensor([[2.0, 2.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    teacher = torch.ones(2, 4)                                        # every teacher score tied
    out = build_loss(name)(scores, labels, teacher)
    out.backward()
    assert math.isfinite(out.item()) and torch.isfinite(scores.grad).all()


@pytest.mark.parametrize("name", ["ranknet", "listnet", "lambdaloss"])
def test_all_zero_labels_give_zero_with_grad(name):
    scores = torch.randn(3, 5, requires_grad=True)
    out = build_loss(name)(scores, torch.zeros(3, 5))
    assert out.requires_grad and out.item() == 0.0
    out.backward()
    assert torch.equal(scores.grad, torch.zeros(3, 5))


def test_all_zero_labels_pointwise_and_distillation():
    scores, _, teacher = make(2, 4)
    zeros = torch.zeros(2, 4)
    close(build_loss("bce")(scores, zeros), ref_bce(scores, zeros))
    close(build_loss("margin-mse")(scores, zeros, teacher), ref_margin_mse(scores, teacher))


@pytest.mark.parametrize("name", NAMES)
def test_single_group_of_two(name):
    scores = torch.tensor([[0.7, -0.4]])
    labels = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[2.0, 1.5]])
    d = 0.7 - (-0.4)
    expected = {
        "lce": math.log(1 + math.exp(-d)),
        "bce": ref_bce(scores, labels),
        "margin-mse": (d - 0.5) ** 2,
        "ranknet": math.log(1 + math.exp(-d)),
        "listnet": ref_listnet(scores, labels),
        # ranks already right: rho = |G_0 - G_1| |1/D_1 - 1/D_2| = 1 - 1/log2(3), delta the same
        "lambdaloss": (1 - 1 / math.log2(3)) * 11 * math.log(1 + math.exp(-d)) / math.log(2),
    }[name]
    close(build_loss(name)(scores, labels, teacher), expected)

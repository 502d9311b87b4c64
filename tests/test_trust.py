"""Trust figures on constructed cases with known answers, attacks on linear models,
constraints, and signatures."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import modelzip as mz
from modelzip.errors import ConfigError, UnsupportedModelError
from modelzip.quantization.int8 import Int8Linear
from modelzip.trust import metrics
from modelzip.trust.api import compare_outputs
from modelzip.trust.constraints import ConstraintGate, check_constraints
from modelzip.trust.robustness import differentiable, fgsm, input_gradient, pgd, robustness


def onehot_logits(pred: list[int], k: int, strength: float = 10.0) -> torch.Tensor:
    return F.one_hot(torch.tensor(pred), k).float() * strength


# ------------------------------------------------------------------ classification
def test_per_class_known_answers():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    pred_o = [0, 0, 0, 1, 1, 1, 1, 1, 2, 0]   # class 0: 3/4, class 1: 4/4, class 2: 1/2
    pred_c = [0, 0, 2, 1, 1, 0, 0, 1, 2, 2]   # class 0: 2/4, class 1: 2/4, class 2: 2/2
    r = metrics.classification(onehot_logits(pred_o, 3), onehot_logits(pred_c, 3), labels)
    assert r["acc_original"] == pytest.approx(0.8)
    assert r["acc_compressed"] == pytest.approx(0.6)
    assert r["drop"] == pytest.approx(0.2)
    rows = {row["class"]: row for row in r["per_class"]}
    assert rows[0]["acc_original"] == 0.75 and rows[0]["acc_compressed"] == 0.5
    assert rows[1]["drop"] == pytest.approx(0.5)
    assert rows[2]["drop"] == pytest.approx(-0.5)
    assert r["worst_class"]["class"] == 1 and r["max_class_drop"] == pytest.approx(0.5)
    # predictions changed at indices 2, 5, 6, 9 -> agreement 6/10
    assert r["agreement"] == pytest.approx(0.6)
    assert rows[0]["flip_rate"] == pytest.approx(0.25)
    assert rows[1]["flip_rate"] == pytest.approx(0.5)
    assert rows[2]["flip_rate"] == pytest.approx(0.5)
    assert (rows[1]["lost"], rows[1]["gained"]) == (2, 0)
    assert (rows[2]["lost"], rows[2]["gained"]) == (0, 1)
    change = torch.tensor(r["confusion_change"])
    assert change.sum() == 0
    assert change[1, 0] == 2 and change[1, 1] == -2      # two 1s now predicted as 0
    assert change[0, 2] == 1 and change[0, 0] == -1
    assert change[2, 2] == 1 and change[2, 0] == -1


def test_ece_known_case():
    # 10 examples at confidence 0.9 (bin (13/15, 14/15]), 7 right: |0.7 - 0.9| = 0.2;
    # 10 at confidence 0.58 (bin (8/15, 9/15]), 6 right: |0.6 - 0.58| = 0.02;
    # ECE = 0.5 * 0.2 + 0.5 * 0.02 = 0.11
    def logits_for(conf: float) -> torch.Tensor:
        return torch.tensor([math.log(conf), math.log(1 - conf)], dtype=torch.float64)

    logits = torch.stack([logits_for(0.9)] * 10 + [logits_for(0.58)] * 10)
    labels = torch.tensor([0] * 7 + [1] * 3 + [0] * 6 + [1] * 4)
    assert metrics.ece(logits, labels) == pytest.approx(0.11, abs=1e-12)
    table = metrics.reliability(torch.softmax(logits, -1).max(-1).values,
                                torch.ones(20, dtype=torch.bool))
    assert [b["count"] for b in table if b["count"]] == [10, 10]
    assert table[13]["count"] == 10 and table[8]["count"] == 10


def test_kl_and_lm_and_cosine():
    p = torch.tensor([[0.0, 0.0]])
    q = torch.tensor([[math.log(3.0), 0.0]])   # softmax = (0.75, 0.25)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert float(metrics.kl_rows(p, q)) == pytest.approx(expected)
    lo = torch.zeros(1, 4, 3)
    lo[0, :, 0] = 5.0                             # original predicts 0 everywhere
    lc = lo.clone()
    lc[0, 3, 1] = 9.0                             # compressed differs at the last token
    targets = torch.tensor([[0, 0, 1, -100]])     # last position ignored
    r = metrics.lm_from_sums(metrics.lm_sums(lo, lc, targets))
    assert r["tokens"] == 3 and r["agreement"] == 1.0 and r["kl_mean"] == pytest.approx(0.0)
    assert r["ppl_original"] == pytest.approx(r["ppl_compressed"])
    c = metrics.cosine_stats(torch.tensor([1.0, 0.5, 0.9, 0.2]), worst=2)
    assert c["cos_min"] == pytest.approx(0.2) and c["cos_mean"] == pytest.approx(0.65)
    assert [w["index"] for w in c["worst"]] == [3, 1]


class Fixed(nn.Module):
    """Returns the stored logits of each example (inputs are example indices)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("table", logits)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]


def test_trust_dispatch_classifier_and_constraints():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    o = Fixed(onehot_logits([0, 0, 0, 1, 1, 1, 1, 1, 2, 0], 3))
    c = Fixed(onehot_logits([0, 0, 2, 1, 1, 0, 0, 1, 2, 2], 3))
    data = [(torch.arange(0, 5), labels[:5]), (torch.arange(5, 10), labels[5:])]
    r = mz.trust(o, c, data, robustness=False)
    assert r["task"] == "classification" and r["agreement"] == pytest.approx(0.6)
    assert check_constraints(r, {"max_class_drop": 0.6, "min_agreement": 0.5}) == []
    failed = check_constraints(r, {"max_class_drop": 0.02, "min_agreement": 0.9})
    assert failed == ["max_class_drop=0.5 (limit 0.02, class 1)",
                      "min_agreement=0.6 (limit 0.9)"]
    with pytest.raises(ConfigError, match="unknown constraint"):
        check_constraints(r, {"max_class_dorp": 0.1})
    with pytest.raises(ConfigError, match="does not apply"):
        check_constraints(r, {"min_cosine": 0.9})
    with pytest.raises(ConfigError):
        check_constraints(r, {"max_kl": "high"})
    # robustness needs float inputs: reported as skipped, not an error
    assert "skipped" in mz.trust(o, c, data)["robustness"]


def test_constraint_gate_caches_the_original():
    labels = torch.tensor([0, 1, 1, 0])
    o = Fixed(onehot_logits([0, 1, 1, 0], 2))
    calls = {"n": 0}
    o.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    data = [(torch.arange(4), labels)]
    gate = ConstraintGate(o, data, {"max_class_drop": 0.2})
    assert gate(Fixed(onehot_logits([0, 1, 1, 0], 2)))[0] == []
    failed, judged = gate(Fixed(onehot_logits([0, 0, 1, 0], 2)))
    assert failed == ["max_class_drop=0.5 (limit 0.2, class 1)"]
    assert judged == {"max_class_drop": 0.5, "worst_class": 1}
    assert calls["n"] == 1
    with pytest.raises(ConfigError, match="eval_data"):
        ConstraintGate(o, None, {"max_class_drop": 0.2})


def test_language_model_and_encoder_dispatch():
    torch.manual_seed(0)
    gpt = mz.zoo.tiny_gpt(vocab_size=11, d_model=16, n_layer=1, n_head=2, seq_len=8)
    x = torch.randint(0, 11, (3, 8))
    data = [(x, torch.roll(x, -1, 1))]
    r = compare_outputs(gpt, copy.deepcopy(gpt), data)
    assert r["task"] == "language_model" and r["agreement"] == 1.0
    assert r["ppl_compressed"] == pytest.approx(r["ppl_original"])
    enc = nn.Linear(4, 6)
    enc2 = copy.deepcopy(enc)
    with torch.no_grad():
        enc2.weight.mul_(-1)
        enc2.bias.mul_(-1)                          # exactly opposite embeddings
    r = mz.trust(enc, enc2, [torch.randn(5, 4)])
    assert r["task"] == "encoder" and r["cos_mean"] == pytest.approx(-1.0)


# ------------------------------------------------------------------------ robustness
def linear_case():
    """logits = [0, w.x]: class 1 iff w.x > 0; margins known exactly."""
    w = torch.tensor([1.0, -2.0, 0.5])
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros(3), w]))
        model.bias.zero_()
    # w.x = 0.35, 0.7, 1.4, -0.35, -1.05 ; ||w||_1 = 3.5
    x = torch.tensor([[0.35, 0, 0], [0.7, 0, 0], [1.4, 0, 0], [-0.35, 0, 0], [0, 0.525, 0]])
    y = torch.tensor([1, 1, 1, 0, 0])
    return model, w, x, y


def test_fgsm_linear_known_answer():
    model, w, x, y = linear_case()
    adv = fgsm(model, x, y, 0.15)
    # the loss grows fastest against the margin: x - eps*sign(w) for class 1, + for class 0
    direction = torch.where(y[:, None] == 1, -w.sign(), w.sign())
    assert torch.allclose(adv, x + 0.15 * direction)
    # a sample survives iff |w.x| > eps * ||w||_1 = 0.525: margins 0.35 0.7 1.4 0.35 1.05
    res = robustness(model, [(x, y)], sigmas=(), eps=(0.15,), pgd_steps=20)
    assert res["clean"] == 1.0
    assert res["fgsm"][0]["accuracy"] == pytest.approx(3 / 5)
    assert res["pgd"][0]["accuracy"] == pytest.approx(3 / 5)  # FGSM is optimal when linear
    adv = pgd(model, x, y, 0.15, steps=20)
    assert float((adv - x).abs().max()) <= 0.15 + 1e-6


def test_ste_through_int8_layer():
    model, w, x, y = linear_case()
    q = nn.Sequential(Int8Linear.from_float(model))
    with differentiable(q), torch.enable_grad():
        xi = x.clone().requires_grad_(True)
        out = q(xi)
        assert torch.equal(out.detach(), q[0](x))        # forward value: the integer path
        (g,) = torch.autograd.grad(out[:, 1].sum(), xi)
    deq = q[0].dequantized()
    assert torch.allclose(g, deq[1].expand_as(g))       # gradient: float layer, dequantized W
    assert torch.allclose(input_gradient(q, x, y), input_gradient(_float_of(q, deq), x, y),
                          atol=1e-6)
    assert not any(h for h in q[0]._forward_hooks.values())  # hooks removed afterwards
    res = robustness(q, [(x, y)], sigmas=(), eps=(0.15,), pgd_steps=0)
    assert res["fgsm"][0]["accuracy"] == pytest.approx(3 / 5)


def _float_of(q: nn.Module, deq: torch.Tensor) -> nn.Module:
    m = nn.Linear(3, 2)
    with torch.no_grad():
        m.weight.copy_(deq)
        m.bias.copy_(q[0].bias)
    return m


def test_attack_needs_a_gradient():
    class Rounder(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x.sum(1), -x.sum(1)], 1).detach()

    with pytest.raises(UnsupportedModelError):
        fgsm(Rounder(), torch.randn(2, 3), torch.tensor([0, 1]), 0.1)

"""Margin-guided escalation (attacks/escalate.py) and the near-boundary report: more attack only where a
sample is close to breaking, per sample and scale-free, and an honest count of what a stronger attack
could still break."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import cnnaudit
from cnnaudit.attacks import AttackRunner
from cnnaudit.attacks.ball import output_diversified_start
from cnnaudit.attacks.escalate import Round, clean_spread, escalate, scaled_margin
from cnnaudit.checks.adversarial import AdversarialOptions
from cnnaudit.checks.adversarial.check import near_boundary, near_boundary_findings
from cnnaudit.checks.adversarial.options import NEAR_MARGIN
from cnnaudit.model.wrapper import AuditedModel
from tests.test_adversarial import Scaled
from tests.zoo import adversarially_trained

EPS = 0.1
ATTACKED = 0.15


@pytest.fixture(scope="module")
def robust(digits):
    """A digits CNN trained on FGSM-RS examples at L-inf 0.1: survivors at 0.1 with small and large margins."""
    x, y, _ = digits
    return AuditedModel(adversarially_trained(x[:1000], y[:1000], eps=EPS), channels=1, input_size=(32, 32)).eval()


@pytest.fixture(scope="module")
def cascade_survivors(robust, digits):
    """(runner, x, y, ids, x_best, spread): the standard cascade's survivors at L-inf 0.15 (1.5x the training
    budget: survivors near the boundary and far from it) on 300 held-out digits, x_best each survivor's
    lowest-margin point of the cascade."""
    x, y, _ = digits
    x, y = x[1000:1300], torch.from_numpy(y[1000:1300])
    ids = np.arange(1000, 1300)
    runner = AttackRunner(robust, num_classes=10, batch_size=32)
    spread = clean_spread(robust, x, 32)
    best, m_best = x.clone(), torch.full((len(x),), np.inf)
    alive = scaled_margin(robust, x, y, spread, 32)[0] > 0
    for k, spec in enumerate(AdversarialOptions().cascade()[1:], 1):
        a = alive.nonzero()[:, 0]
        adv = runner.run(spec, x[a], y[a], eps=ATTACKED, norm="linf", seed=k, ids=ids[a.numpy()], start=best[a])
        m, hit = scaled_margin(robust, adv, y[a], spread[a], 32)
        lower = m < m_best[a]
        best[a[lower]], m_best[a[lower]] = adv[lower], m[lower]
        alive[a[hit]] = False
    a = alive.nonzero()[:, 0]
    return runner, x[a], y[a], ids[a.numpy()], best[a], spread[a]


def test_scaled_margin_is_the_same_for_a_x10_4_twin(robust, digits):
    x, y, _ = digits
    x, y = x[1000:1064], torch.from_numpy(y[1000:1064])
    twin = AuditedModel(Scaled(robust.model), channels=1, input_size=(32, 32)).eval()
    m, wrong = scaled_margin(robust, x, y, clean_spread(robust, x, 16), 16)
    m2, wrong2 = scaled_margin(twin, x, y, clean_spread(twin, x, 16), 16)
    assert torch.equal(wrong, wrong2)
    assert torch.allclose(m, m2, rtol=1e-4, atol=1e-5)
    assert bool(((m <= 0) == wrong).all())  # margin <= 0 exactly where the sample is misclassified
    assert float(m.abs().max()) < 20  # in units of the clean logits' spread: order 1, whatever the scale


def test_only_survivors_below_a_rounds_margin_are_attacked(cascade_survivors):
    runner, x, y, ids, best, spread = cascade_survivors
    m0, _ = scaled_margin(runner.model, best, y, spread, 32)
    assert len(x) >= 20 and float(m0.min()) < 0.5 < float(m0.max()), m0  # survivors both near and far
    rounds = AdversarialOptions().escalation()
    out = escalate(runner, rounds, x, y, best, spread, eps=ATTACKED, norm="linf", seed=0, ids=ids)
    assert out["attacked"][0] == int((m0 < rounds[0].below).sum())
    far = (m0 >= rounds[0].below).numpy()
    # a survivor with a wide margin is not touched: its point and margin are the cascade's
    assert torch.equal(out["x_best"][far], best[far])
    assert torch.allclose(out["margin"][far], m0[far])
    # margins only fall, every new break is an escalation attack's, and every point stays in the ball
    assert bool((out["margin"] <= m0 + 1e-6).all())
    names = {r.attack.name for r in rounds}
    assert set(out["found_by"][out["broken"].numpy()]) <= names
    assert float((out["x_best"] - x).abs().max()) <= ATTACKED + 1e-6
    m_after, wrong = scaled_margin(runner.model, out["x_best"], y, spread, 32)
    assert torch.equal(wrong, out["broken"])


def test_escalation_breaks_more_than_the_cascade_and_a_longer_attack_on_the_far_ones_breaks_nothing(cascade_survivors):
    runner, x, y, ids, best, spread = cascade_survivors
    rounds = AdversarialOptions().escalation()
    out = escalate(runner, rounds, x, y, best, spread, eps=ATTACKED, norm="linf", seed=0, ids=ids)
    assert int(out["broken"].sum()) >= 1, out["attacked"]
    # the premise: the samples it leaves alone (wide margin) are the ones a longer attack cannot break either
    m0, _ = scaled_margin(runner.model, best, y, spread, 32)
    far = (m0 >= rounds[0].below).nonzero()[:, 0]
    strong = Round(rounds[0].attack, np.inf)
    longer = escalate(runner, (strong, Round(rounds[1].attack, np.inf)), x[far], y[far], best[far], spread[far],
                      eps=ATTACKED, norm="linf", seed=0, ids=ids[far.numpy()])
    assert int(longer["broken"].sum()) <= max(1, len(far) // 20), (int(longer["broken"].sum()), len(far))


def test_a_samples_escalation_does_not_depend_on_its_neighbours(cascade_survivors):
    runner, x, y, ids, best, spread = cascade_survivors
    rounds = AdversarialOptions().escalation()
    kw = dict(eps=ATTACKED, norm="linf", seed=0)
    whole = escalate(runner, rounds, x, y, best, spread, ids=ids, **kw)
    half = np.arange(0, len(x), 2)
    part = escalate(runner, rounds, x[half], y[half], best[half], spread[half], ids=ids[half], **kw)
    assert torch.equal(whole["broken"][half], part["broken"])
    assert torch.allclose(whole["margin"][half], part["margin"], atol=1e-4)


def test_output_diversified_start_is_in_the_ball_seeded_per_sample_and_moves_the_logits(robust, digits):
    x = digits[0][1000:1040]
    kw = dict(eps=EPS, norm="linf", seed=0, salt="odi")
    whole = output_diversified_start(robust, x, ids=np.arange(40), width=16, **kw)
    part = output_diversified_start(robust, x[20:], ids=np.arange(20, 40), width=7, **kw)
    assert torch.allclose(whole[20:], part, atol=1e-6)
    assert float((whole - x).abs().max()) <= EPS + 1e-6 and float(whole.min()) >= 0 and float(whole.max()) <= 1
    with torch.no_grad():
        moved = (robust(whole) - robust(x)).norm(dim=1)
        uniform = (robust((x + (torch.rand_like(x) * 2 - 1) * EPS).clamp(0, 1)) - robust(x)).norm(dim=1)
    assert float(moved.mean()) > 2 * float(uniform.mean())  # spread in output space, the point of ODI


def rows(correct, margin):
    return pd.DataFrame({"correct": correct, "margin": margin})


def test_near_boundary_counts_robust_samples_under_the_margin_and_flags_what_the_interval_hides():
    from cnnaudit import aggregate
    # 200 samples, 120 robust, 30 of them with margins under NEAR_MARGIN (0.05): 15 points, far beyond a +-6.8 point interval
    correct = np.r_[np.ones(120, bool), np.zeros(80, bool)]
    margin = np.r_[np.full(30, 0.02), np.full(90, 0.8), np.full(80, -0.3)]
    sel = rows(correct, margin)
    acc = aggregate.accuracy(sel)
    r = {"attack": "worst_case", "norm": "linf", "eps_label": "0.1", "robust_accuracy": acc["accuracy"],
         "robust_accuracy_ci": acc["accuracy_ci"], "n": acc["n"]}
    r.update(near_boundary(sel, r))
    assert r["n_near_boundary"] == 30 and r["robust_accuracy_if_near_broken"] == pytest.approx(0.45)
    assert r["near_boundary_exceeds_ci"]
    (f,) = near_boundary_findings({"results": [r]})
    assert f.kind == "near_boundary" and f.severity == "warn" and "60.0% to 45.0%" in f.detail
    # 2 near the boundary: within the interval, no finding
    margin[2:30] = 0.8
    r2 = {**r, **near_boundary(rows(correct, margin), r)}
    assert r2["n_near_boundary"] == 2 and not r2["near_boundary_exceeds_ci"]
    assert near_boundary_findings({"results": [r2]}) == []


def test_the_audit_reports_near_boundary_counts_from_its_rows(robust, digits_dir):
    res = cnnaudit.audit(robust.model, digits_dir, checks=["adversarial"], limit=120,
                         adversarial={"norms": ("linf",), "eps": {"linf": [EPS]}})
    adv = res.summary["adversarial"]
    worst = next(r for r in adv["results"] if r["attack"] == "worst_case")
    rows_ = res.samples.query("check == 'adversarial'")
    assert worst["n_near_boundary"] == int((rows_["correct"] & (rows_["margin"] < NEAR_MARGIN)).sum()) > 0
    assert (rows_.loc[~rows_["correct"] & (rows_["attack"] != "clean_error"), "margin"] <= 0).all()
    assert (rows_.loc[rows_["correct"], "margin"] > 0).all()
    assert [r["attack"] for r in adv["escalation"]["rounds"]] == ["apgd_t_near", "apgd_dlr_odi", "square_near"]
    fast = cnnaudit.audit(robust.model, digits_dir, checks=["adversarial"], limit=120,
                          adversarial={"norms": ("linf",), "eps": {"linf": [EPS]}, "attack_strength": "fast"})
    fast_worst = next(r for r in fast.summary["adversarial"]["results"] if r["attack"] == "worst_case")
    assert fast.summary["adversarial"]["escalation"]["rounds"] == []
    assert worst["robust_accuracy"] <= fast_worst["robust_accuracy"]

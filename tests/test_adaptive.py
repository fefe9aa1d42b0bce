"""Adaptive evaluation: the gradient-free Square attack, the attack self-test, EOT against a randomized
model and adversarials re-checked as 8-bit images, on a real tiny digits CNN and real digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import cnnaudit
from cnnaudit.attacks import ATTACKS, AttackRunner, AttackSpec
from cnnaudit.attacks.eot import vote, with_draws
from cnnaudit.attacks.self_test import run_self_test
from cnnaudit.attacks.square import p_selection, square
from cnnaudit.checks.adversarial import CASCADES, saved_8bit, spec
from tests import zoo
from tests.conftest import read_summary, run_cli


class Quantized(nn.Module):
    """The input rounded to 4 levels inside the forward: zero gradients everywhere (Athalye et al. 2018)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 4) / 4)


@pytest.fixture(scope="module")
def tensors(digits, eager_model):
    """80 held-out digits the digits CNN classifies correctly."""
    x, y, _ = digits
    xs, ys = x[1000:1200], torch.as_tensor(y[1000:1200]).long()
    with torch.no_grad():
        ok = eager_model(xs).argmax(1) == ys
    return xs[ok][:80], ys[ok][:80]


def robust(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_p_schedule_follows_the_paper():
    assert p_selection(0.8, 0, 10000) == 0.8 and p_selection(0.8, 11, 10000) == 0.4
    assert p_selection(0.8, 600, 10000) == pytest.approx(0.8 / 16)
    assert p_selection(0.8, 9000, 10000) == pytest.approx(0.8 / 512)
    assert p_selection(0.8, 60, 1000) == pytest.approx(0.8 / 16)  # rescaled to the budget


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_square_breaks_a_quantized_model_that_pgd_cannot_move(eager_model, tensors, norm, eps):
    x, y = tensors
    q = Quantized(eager_model).eval()
    runner = AttackRunner(q, num_classes=10)
    pgd_adv = runner.run(ATTACKS["pgd"], x, y, eps=eps, norm=norm, seed=0)
    assert torch.equal(pgd_adv, x)  # zero gradients: PGD takes no step at all
    clean = robust(q, x, y)
    sq = runner.run(ATTACKS["square"], x, y, eps=eps, norm=norm, seed=0, ids=np.arange(len(x)))
    size = (sq - x).flatten(1).abs().amax(1) if norm == "linf" else (sq - x).flatten(1).norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5) and sq.min() >= 0 and sq.max() <= 1
    assert robust(q, sq, y) <= clean - (0.3 if norm == "linf" else 0.1)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
def test_square_is_per_sample_deterministic_across_batch_sizes_and_order(eager_model, tensors, norm, eps):
    x, y = tensors[0][:24], tensors[1][:24]
    ids = np.arange(100, 124)
    a = square(eager_model, x, y, eps=eps, norm=norm, queries=200, seed=3, ids=ids, width=64)
    perm = np.random.default_rng(0).permutation(24)
    b = square(eager_model, x[perm], y[perm], eps=eps, norm=norm, queries=200, seed=3, ids=ids[perm], width=5)
    assert torch.allclose(a[perm], b, atol=1e-6)
    c = square(eager_model, x, y, eps=eps, norm=norm, queries=200, seed=4, ids=ids, width=64)
    assert not torch.allclose(a, c)  # the seed matters


def test_square_ignores_the_scale_of_the_logits(eager_model, tensors):
    x, y = tensors[0][:32], tensors[1][:32]
    a = square(eager_model, x, y, eps=0.1, norm="linf", queries=150, ids=np.arange(32))
    scaled = zoo.Scaled(eager_model, 1e4)
    b = square(scaled, x, y, eps=0.1, norm="linf", queries=150, ids=np.arange(32))
    same = (a == b).flatten(1).all(dim=1)
    # only a sample's own margins are compared; float rounding of a x10^4 margin may flip a near-tie
    assert float(same.float().mean()) >= 0.9
    with torch.no_grad():
        assert abs(robust(eager_model, a, y) - robust(scaled, b, y)) <= 1 / 32


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
@pytest.mark.slow
def test_square_at_least_as_strong_as_arts(eager_model, tensors, norm, eps):
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import PyTorchClassifier
    x, y = tensors[0][:60], tensors[1][:60]
    est = PyTorchClassifier(eager_model, loss=nn.CrossEntropyLoss(), input_shape=(1, 32, 32), nb_classes=10,
                            clip_values=(0.0, 1.0))
    np.random.seed(0)
    art = SquareAttack(est, norm=np.inf if norm == "linf" else 2, eps=eps, max_iter=1000, p_init=0.8,
                       nb_restarts=1, batch_size=64, verbose=False).generate(x.numpy(), y=y.numpy())
    ours = square(eager_model, x, y, eps=eps, norm=norm, queries=1000, ids=np.arange(60))
    assert robust(eager_model, ours, y) <= robust(eager_model, torch.as_tensor(art), y) + 1 / 60


def _crippled():
    return [AttackSpec("pgd", "pgd", "ce", steps=1, step_size=0.01)]  # one tiny step


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_self_test_passes_for_the_default_cascade_and_fails_for_a_crippled_attack(eager_model, tensors, norm, eps):
    x = tensors[0][:48]
    make = lambda v: AttackRunner(v, num_classes=2)  # noqa: E731
    default = [spec(n) for n in CASCADES["standard"]]
    ok = run_self_test(eager_model, make, default, x, eps, norm, seed=0, ids=np.arange(48))
    assert ok["built"] >= 15 and ok["share"] >= 0.95
    bad = run_self_test(eager_model, make, _crippled(), x, eps, norm, seed=0, ids=np.arange(48))
    assert bad["built"] == ok["built"] and bad["share"] <= 0.2
    # zero gradients defeat the gradient cascade's self-test; the gradient-free attack passes it
    q = Quantized(eager_model).eval()
    masked = run_self_test(q, make, default, x, eps, norm, seed=0, ids=np.arange(48))
    assert masked["share"] < 0.5
    assert run_self_test(q, make, [spec("square")], x, eps, norm, seed=0, ids=np.arange(48))["share"] >= 0.95


def test_eot_lowers_robust_accuracy_on_a_randomized_model(eager_model, tensors):
    """PGD on a randomized model: following one draw's gradient (and stopping at one lucky draw) leaves
    more samples standing, by the same 9-draw majority vote, than averaging gradients over 9 draws."""
    x, y = tensors
    model = zoo.Randomized(eager_model, sigma=0.1)
    pgd = AttackSpec("pgd", "pgd", "ce", steps=10, step_size=0.25)

    def voted_robust(adv) -> float:
        torch.manual_seed(123)
        with torch.no_grad():
            preds = torch.stack([model(adv).argmax(1) for _ in range(9)])
        return float((vote(preds, y, 10) == y).float().mean())

    torch.manual_seed(0)
    single = AttackRunner(model, num_classes=10).run(pgd, x, y, eps=0.08, norm="linf", seed=0)
    torch.manual_seed(0)
    eot = AttackRunner(with_draws(model, 9), num_classes=10).run(pgd, x, y, eps=0.08, norm="linf", seed=0)
    assert voted_robust(eot) <= voted_robust(single) - 0.05


def test_saved_8bit_rounds_to_the_nearest_level():
    x = torch.tensor([0.0, 0.1, 0.5, 1.0]).view(1, 1, 1, 4)
    out = saved_8bit(x)
    assert torch.allclose(out * 255, torch.round(out * 255)) and float((out - x).abs().max()) <= 0.5 / 255 + 1e-6


@pytest.mark.slow
def test_eight_bit_recheck_and_square_on_request_from_the_cli(eager_model, digits_dir, tmp_path):
    """`--attacks ...,square` puts Square in the cascade; robust accuracy after 8-bit rounding is reported and
    never below the float one (rounding can only undo breaks)."""
    path = tmp_path / "quantized.pt"
    torch.jit.save(torch.jit.script(Quantized(eager_model).eval()), str(path))
    out = tmp_path / "out"
    res = run_cli("run", path, digits_dir, "--out", out, "--checks", "adversarial", "--limit", "40",
                  "--norms", "linf", "--eps-linf", "0.1", "--attacks", "fgsm,pgd,square")
    assert res.returncode == 0, res.stderr
    adv = read_summary(out)["adversarial"]
    assert adv["cascade"] == ["fgsm", "pgd", "square"]
    # requested, then given AutoAttack's 5,000 queries once masking was confirmed
    assert adv["square"] == {"queries": 5000, "automatic": False}
    assert adv["gradient_masking"] == "confirmed"
    worst = next(r for r in adv["results"] if r["attack"] == "worst_case")
    assert worst["found_by"].get("square", 0) >= 10
    assert worst["robust_accuracy_8bit"] >= worst["robust_accuracy"]


def test_thorough_cascade_is_autoattacks_attacks_in_torch():
    assert CASCADES["thorough"][-2:] == ["apgd_t_thorough", "square_thorough"]
    assert spec("square_thorough").steps == 5000 and spec("apgd_t_thorough").restarts == 9


def test_thorough_audit_runs_square_in_the_cascade(eager_model, digits_dir):
    result = cnnaudit.audit(eager_model, digits_dir, checks=["adversarial"], limit=30,
                            adversarial={"eps": {"linf": [0.2]}, "norms": ("linf",),
                                                     "attack_strength": "thorough"})
    adv = result.summary["adversarial"]
    assert adv["square"] == {"queries": 5000, "automatic": False}
    assert adv["gradient_masking"] == "none", adv["sanity"]
    assert {s["check"] for s in adv["sanity"]} >= {"attack_self_test", "gradient_free_beats_gradient"}
    worst = next(r for r in adv["results"] if r["attack"] == "worst_case")
    assert worst["robust_accuracy"] <= 0.1

"""The adversarial check: right (scale-invariant, bounded, monotone, at least as strong as a plain PGD),
deterministic, and honest about gradient masking."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnaudit
from cnnaudit.attacks import ATTACKS, AttackRunner
from cnnaudit.checks.adversarial import CASCADES, THOROUGH, check_bounds
from cnnaudit.model.wrapper import AuditedModel

LINF = [0.05, 0.1, 0.2]
L2 = [1.0, 2.0]
LIMIT = 100


class Scaled(nn.Module):
    """Same decisions as `inner`, logits x 10^4: softmax saturates and cross-entropy gradients vanish."""

    def __init__(self, inner, factor=1e4):
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x):
        return self.inner(x) * self.factor


def audit_adv(model, data, **options):
    opts = {"eps": {"linf": LINF, "l2": L2}, **options}
    return cnnaudit.audit(model, data, checks=["adversarial"], limit=LIMIT, adversarial=opts)


def worst(summary, norm=None):
    return {(r["norm"], r["eps"]): r["robust_accuracy"] for r in summary["adversarial"]["results"]
            if r["attack"] == "worst_case" and (norm is None or r["norm"] == norm)}


@pytest.fixture(scope="module")
def base(eager_model, digits_dir):
    return audit_adv(eager_model, digits_dir)


@pytest.fixture(scope="module")
def eval_tensors(digits_dir, base):
    from cnnaudit.data import iter_batches, open_dataset
    ds = open_dataset(digits_dir)
    ids = base.samples.query("condition == 'clean'")["sample_id"].to_numpy()
    batch = next(iter_batches(ds, ids, channels=1, size=(32, 32), batch_size=10**6))
    return batch.x, batch.y


def plain_pgd_robust(model, x, y, eps, norm, steps=20, restarts=1, seed=0):
    """An independent plain-torch PGD with ordinary cross-entropy (Madry et al. 2018)."""
    torch.manual_seed(seed)
    robust = model(x).argmax(1) == y
    alpha = 2.5 * eps / steps
    for _ in range(restarts):
        delta = torch.zeros_like(x)
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model(x + delta), y)
            (g,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                if norm == "linf":
                    delta = (delta + alpha * g.sign()).clamp(-eps, eps)
                else:
                    gn = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                    delta = delta + alpha * g / gn
                    dn = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                    delta = delta * torch.clamp(eps / dn.clamp_min(1e-12), max=1.0)
                delta = (x + delta).clamp(0, 1) - x
        with torch.no_grad():
            robust &= model(x + delta).argmax(1) == y
    return robust.float().mean().item()


def test_summary_shape_and_rows(base):
    adv = base.summary["adversarial"]
    assert {"results", "sanity", "gradient_masking_suspected"} <= set(adv)
    keys = {(r["attack"], r["norm"], r["eps"]) for r in adv["results"]}
    assert keys == {(a, "linf", e) for a in ("fgsm", "worst_case") for e in LINF} | \
                   {(a, "l2", e) for a in ("fgsm", "worst_case") for e in L2}
    rows = base.samples.query("check == 'adversarial'")
    assert len(rows) == LIMIT * (len(LINF) + len(L2))
    for r in adv["results"]:  # aggregates are derived from the rows
        sel = rows[(rows["norm"] == r["norm"]) & (rows["eps"] == r["eps"])]
        col = "correct" if r["attack"] == "worst_case" else "fgsm_correct"
        assert r["robust_accuracy"] == pytest.approx(sel[col].mean(), abs=1e-6) and r["n"] == LIMIT
        lo, hi = r["robust_accuracy_ci"]
        assert lo <= r["robust_accuracy"] <= hi
    # the worst case breaks something at every budget here and FGSM alone is weaker than the cascade
    w = worst(base.summary)
    assert w[("linf", 0.2)] < 0.1 and w[("linf", 0.05)] > w[("linf", 0.1)]
    fg = {(r["norm"], r["eps"]): r["robust_accuracy"] for r in adv["results"] if r["attack"] == "fgsm"}
    assert all(w[k] <= fg[k] for k in w) and any(w[k] < fg[k] for k in w)
    assert not adv["gradient_masking_suspected"] and adv["gradient_masking"] == "none", adv["sanity"]
    assert adv["square"] is None and "attack_self_test" in {s["check"] for s in adv["sanity"]}


def test_robust_accuracy_is_monotone_and_min_eps_consistent(base):
    for norm in ("linf", "l2"):
        accs = [a for _, a in sorted(worst(base.summary, norm).items())]
        assert all(b <= a for a, b in zip(accs, accs[1:]))
    rows = base.samples.query("check == 'adversarial'")
    clean = base.samples.query("condition == 'clean'").set_index("sample_id")["correct"]
    for _, r in rows.iterrows():
        if not clean[r["sample_id"]]:
            assert not r["correct"] and r["attack"] == "clean_error"
        elif r["correct"]:
            assert np.isnan(r["min_eps"]) or r["min_eps"] > r["eps"]
        else:
            assert r["min_eps"] <= r["eps"] and r["attack"] in ("fgsm", "pgd", "apgd_dlr", "apgd_t")


def test_scaled_logit_twin_gets_the_same_numbers(eager_model, digits_dir, base, eval_tensors):
    twin = audit_adv(Scaled(eager_model), digits_dir)
    a, b = worst(base.summary), worst(twin.summary)
    assert max(abs(a[k] - b[k]) for k in a) <= 0.02, (a, b)
    # the trap is real: a cross-entropy-only PGD is fooled by the scaled twin
    x, y = eval_tensors
    x, y = x[:LIMIT], y[:LIMIT]
    plain = plain_pgd_robust(eager_model, x, y, 0.2, "linf")
    fooled = plain_pgd_robust(Scaled(eager_model), x, y, 0.2, "linf")
    assert plain < 0.1 and fooled > plain + 0.5, (plain, fooled)
    # and cnnaudit says why, without calling the twin's robustness real
    detail = next(s["detail"] for s in twin.summary["adversarial"]["sanity"] if s["check"] == "gradients_usable")
    assert "plain cross-entropy is saturated" in detail


def test_at_least_as_strong_as_independent_plain_pgd(eager_model, base, eval_tensors):
    x, y = eval_tensors
    ids = base.samples.query("condition == 'clean'")["sample_id"].to_numpy()
    assert len(ids) == len(x) == LIMIT
    w = worst(base.summary)
    for norm, grid in (("linf", LINF), ("l2", L2)):
        for eps in grid:
            theirs = plain_pgd_robust(eager_model, x, y, eps, norm)
            assert w[(norm, eps)] <= round(theirs, 6), (norm, eps, w[(norm, eps)], theirs)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
def test_every_attack_stays_in_the_eps_ball_and_unit_range(eager_model, eval_tensors, norm, eps):
    model = AuditedModel(eager_model, channels=1, input_size=(32, 32))
    runner = AttackRunner(model, num_classes=10, batch_size=32)
    x, y = eval_tensors
    x, y = x[:24], y[:24]
    specs = {ATTACKS[n] for n in CASCADES["standard"]} | set(THOROUGH.values())
    for spec in sorted(specs, key=lambda s: (s.name, s.steps)):
        adv = runner.run(spec, x, y, eps=eps, norm=norm, seed=0)
        assert adv.shape == x.shape
        assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
        d = (adv - x).flatten(1)
        size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
        assert float(size.max()) <= eps * (1 + 1e-5) + 1e-7, spec
        assert float(size.max()) > 0.5 * eps, spec  # it did perturb
        fixed = check_bounds(adv, x, eps, norm)
        d = (fixed - x).flatten(1)
        size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
        assert float(size.max()) <= eps + 1e-6


def test_bounds_violation_is_an_error(eval_tensors):
    x = eval_tensors[0][:4]
    with pytest.raises(AssertionError):
        check_bounds((x + 0.2).clamp(0, 1), x, 0.1, "linf")
    with pytest.raises(AssertionError):
        check_bounds(x * 0 + 1.5, x, 10.0, "l2")


def test_deterministic(eager_model, digits_dir, base):
    again = audit_adv(eager_model, digits_dir)
    a, b = dict(base.summary["adversarial"]), dict(again.summary["adversarial"])
    assert a == b
    cols = ["sample_id", "condition", "prediction", "correct", "attack", "min_eps"]
    left = base.samples.query("check == 'adversarial'")[cols].reset_index(drop=True)
    right = again.samples.query("check == 'adversarial'")[cols].reset_index(drop=True)
    assert left.equals(right)


def test_gradient_masking_is_confirmed_and_square_breaks_what_pgd_cannot(eager_model, digits_dir):
    class Quantized(nn.Module):  # a classic "defence": rounding the input has zero gradient everywhere
        def __init__(self):
            super().__init__()
            self.inner = eager_model

        def forward(self, x):
            return self.inner(torch.round(x * 4) / 4)

    result = cnnaudit.audit(Quantized(), digits_dir, checks=["adversarial"], limit=30,
                            adversarial={"eps": {"linf": [0.1, 0.3]}, "norms": ("linf",)})
    adv = result.summary["adversarial"]
    assert adv["gradient_masking"] == "confirmed" and adv["gradient_masking_suspected"] is True
    failed = {s["check"] for s in adv["sanity"] if not s["passed"]}
    assert {"gradients_usable", "large_eps_reaches_zero_linf", "attack_self_test",
            "gradient_free_beats_gradient"} <= failed
    assert adv["square"] == {"queries": 5000, "automatic": True}  # 1,000 queries, then 5,000 once confirmed
    rows = result.samples.query("check == 'adversarial' and eps == 0.1")
    clean_correct = int((rows["attack"] != "clean_error").sum())
    by_square = int((rows["attack"] == "square").sum())
    # the gradient attacks cannot move the quantized model (zero gradients); Square breaks most of it
    assert int(rows["attack"].isin(["fgsm", "pgd", "apgd_dlr"]).sum()) == 0
    assert by_square >= 0.4 * clean_correct
    assert any(f["kind"] == "masking" and f["severity"] == "fail" and "confirmed" in f["title"]
               for f in result.summary["findings"])
    assert any("Square attack (1000 queries a sample) ran" in f for f in result.summary["finding_sentences"])
    assert any("Square ran again with 5000 queries" in f for f in result.summary["finding_sentences"])
    assert "Gradient masking confirmed" in result.html()
    broken = rows[rows["attack"] == "square"]
    assert (broken["min_eps"] <= broken["eps"]).all() and not broken["correct"].any()


def test_torchscript_and_export_models_can_be_attacked(torchscript_path, tmp_path, eager_model, digits_dir):
    ep = torch.export.export(eager_model, (torch.zeros(2, 1, 32, 32),),
                             dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    opts = {"adversarial": {"eps": {"linf": [0.1]}, "norms": ("linf",)}}
    r1 = cnnaudit.audit(torchscript_path, digits_dir, checks=["adversarial"], limit=30, options=opts)
    r2 = cnnaudit.audit(tmp_path / "m.pt2", digits_dir, checks=["adversarial"], limit=30, options=opts,
                        unsafe_pickle=True)
    assert worst(r1.summary) == worst(r2.summary)


def test_gallery_spreads_over_classes(base):
    gallery = next(r for r in base.results if r.name == "adversarial").report["gallery"]
    labels = [g["label"] for g in gallery]
    assert 0 < len(gallery) <= 12
    assert max(labels.count(label) for label in labels) <= 2  # ceil(12 / 10 classes)
    assert len(set(labels)) > 1


@pytest.mark.parametrize("name,norm,eps", [("pgd", "linf", 0.1), ("pgd", "l2", 2.0), ("apgd_dlr", "linf", 0.1),
                                           ("apgd_dlr", "l2", 2.0)])
def test_torch_attacks_at_least_as_strong_as_arts(eager_model, eval_tensors, name, norm, eps):
    """cnnaudit's own PGD/APGD (early stopping, no NumPy) against ART's, same loss and settings."""
    model = AuditedModel(eager_model, channels=1, input_size=(32, 32))
    x, y = eval_tensors
    x, y = x[:64], y[:64]
    robust = {}
    for backend in ("torch", "art"):
        runner = AttackRunner(model, num_classes=10, batch_size=32, backend=backend)
        adv = check_bounds(runner.run(ATTACKS[name], x, y, eps=eps, norm=norm, seed=0, ids=range(64)), x, eps, norm)
        with torch.no_grad():
            robust[backend] = model(adv).argmax(1) == y
    assert 0 < int((~robust["art"]).sum()) < 64  # the budget is informative
    if name == "pgd":  # same deterministic trajectory: every sample ART breaks, early stopping breaks too
        assert not bool((robust["torch"] & ~robust["art"]).any()), (robust["torch"].sum(), robust["art"].sum())
    else:  # different random starts: no weaker beyond one sample
        assert int(robust["torch"].sum()) <= int(robust["art"].sum()) + 1


def test_random_starts_depend_on_sample_id_not_batch(eval_tensors):
    from cnnaudit.attacks.ball import random_start
    x = eval_tensors[0][:40]
    whole = random_start(x, 0.1, "l2", seed=3, ids=range(100, 140), salt="a")
    part = random_start(x[25:], 0.1, "l2", seed=3, ids=range(125, 140), salt="a")
    assert torch.equal(whole[25:], part)
    other = random_start(x, 0.1, "l2", seed=4, ids=range(100, 140), salt="a")
    assert not torch.equal(whole, other)
    d = (whole - x).flatten(1).norm(dim=1)
    assert float(d.max()) <= 0.1 + 1e-6 and float(d.mean()) > 0.05


@pytest.mark.parametrize("name,norm,eps,restarts", [("fgsm", "linf", 0.1, 1), ("pgd", "linf", 0.1, 1),
                                                    ("apgd_dlr", "linf", 0.1, 1), ("pgd", "l2", 1.5, 2),
                                                    ("apgd_dlr", "l2", 1.5, 2)])
def test_pooled_samples_share_passes_but_follow_their_own_trajectories(eager_model, eval_tensors, name, norm, eps,
                                                                        restarts):
    # the check hands AttackRunner several batches' survivors at once (pooled_batches); the iterative attacks
    # refill a finished sample's slot with the next one (attacks/slots.py). Each sample's example must be the
    # one it gets attacked alone: its own id's random starts, its own warm start, its own step schedule.
    model = AuditedModel(eager_model, channels=1, input_size=(32, 32)).eval()
    x, y = eval_tensors[0][:20], eval_tensors[1][:20]
    ids, start = np.arange(500, 520), (x + 0.03 * torch.sign(x - 0.5)).clamp(0, 1)
    spec = dataclasses.replace(ATTACKS[name], restarts=restarts)
    kw = dict(eps=eps, norm=norm, seed=0)
    pooled = AttackRunner(model, num_classes=10, batch_size=8).run(spec, x, y, ids=ids, start=start, **kw)
    one = AttackRunner(model, num_classes=10, batch_size=1)
    alone = torch.cat([one.run(spec, x[i:i + 1], y[i:i + 1], ids=ids[i:i + 1], start=start[i:i + 1], **kw)
                       for i in range(len(x))])
    with torch.no_grad():
        fooled_pooled, fooled_alone = model(pooled).argmax(1) != y, model(alone).argmax(1) != y
    assert 0 < int(fooled_alone.sum()) < len(x)  # the budget is informative
    # Batched kernels round differently from single-sample ones, and once a gradient component's sign flips
    # a trajectory goes its own way (the previous, batch-at-a-time code did the same to 1 of these 20).
    # A sample given another's id, warm start or step counter would differ from the start.
    differs = (pooled - alone).flatten(1).abs().max(dim=1).values > 1e-3 * eps
    assert int(differs.sum()) <= 2, differs
    assert int((fooled_pooled != fooled_alone).sum()) <= 1


def test_iterative_attacks_keep_every_pass_full_until_the_queue_runs_out(eager_model, eval_tensors):
    model = AuditedModel(eager_model, channels=1, input_size=(32, 32)).eval()
    x, y = eval_tensors[0][:100], eval_tensors[1][:100]
    with torch.no_grad():
        x, y = x[model(x).argmax(1) == y], y[model(x).argmax(1) == y]
    sizes = []
    hook = model.register_forward_hook(lambda module, inputs, out: sizes.append(len(inputs[0])))
    try:
        AttackRunner(model, num_classes=10, batch_size=16).run(ATTACKS["apgd_dlr"], x, y, eps=0.1, norm="linf",
                                                                seed=0, ids=np.arange(len(x)))
    finally:
        hook.remove()
    short = [s for s in sizes if s < 16]
    # once no sample is left waiting, the last 16 finish within the 20 steps; before that every pass is full
    assert sizes[:len(sizes) - len(short)] == [16] * (len(sizes) - len(short)) and len(short) <= 20, sizes
    assert len(sizes) > 20 + len(x) // 16  # samples finished at different steps and were replaced


def test_pools_are_cut_by_image_bytes_and_leave_work_for_a_second_process():
    from cnnaudit.checks.adversarial import pooled_batches
    assert pooled_batches(100_000, 64, 3, (32, 32)) == 16  # the cap
    assert pooled_batches(1000, 64, 3, (32, 32)) == 8  # 16 batches: two pools, one per process of two
    assert pooled_batches(600, 64, 1, (32, 32)) == 5
    assert pooled_batches(100_000, 64, 3, (224, 224)) == 1  # 38.5 MB a batch: one batch a pool
    assert pooled_batches(100_000, 16, 3, (224, 224)) == 6
    assert pooled_batches(10, 64, 3, (32, 32)) == 1

"""Is the attack evidence trustworthy? Sanity checks after Carlini et al. 2019, "On Evaluating Adversarial
Robustness", on a seeded subset; the attack self-test (attacks/self_test.py); and, when Square ran, whether
the gradient-free attack beat the gradient ones (gradient masking confirmed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ...attacks import ATTACKS, AttackRunner
from ...attacks.ball import check_bounds
from ...attacks.self_test import PASS_SHARE as SELF_TEST_PASS, run_self_test
from ...budgets import eps_label
from ...findings import Finding
from ...predict import predict
from ...stats import wilson_ci

# Square (gradient-free) on the survivors when a masking sanity check fails; "confirmed" masking when it
# then breaks more than this share of them (lower end of the 95% Wilson interval): PGD/APGD on honest
# gradients leave Square little (AutoAttack's Square adds under 0.5 pp on non-masked models).
CONFIRM_SHARE = 0.05
SANITY_SUBSET = 64


def sanity_checks(model, runner, x, y, grid, results, opts, seed, ids=None, cascade=None) -> list[dict]:
    checks = monotone_checks(grid, results)
    if x is None or not len(x):
        return checks
    n = len(x)
    for norm, eps_list in grid.items():
        eps = eps_list[len(eps_list) // 2]
        # 2. an iterative attack is at least as strong as a single step (else gradients mislead)
        acc = {}
        for name in ("fgsm", "pgd"):
            adv = check_bounds(runner.run(ATTACKS[name], x, y, eps=eps, norm=norm, seed=seed, ids=ids), x, eps, norm)
            acc[name] = float(predict(model, adv, y)["correct"].mean())
        checks.append({"check": f"iterative_beats_single_step_{norm}", "passed": acc["pgd"] <= acc["fgsm"] + 1.0 / n,
                       "detail": f"on {n} samples at eps {eps_label(norm, eps)}: PGD {acc['pgd']:.3f} vs FGSM "
                                 f"{acc['fgsm']:.3f} robust accuracy"})
        # 3. an (almost) unbounded attack must succeed
        # unbounded within [0, 1]: L-inf 1, and for L2 the diameter of the pixel cube, sqrt(C*H*W)
        big = (opts.large_eps or {}).get(norm, 1.0 if norm == "linf" else float(x[0].numel()) ** 0.5)
        alive = torch.ones(n, dtype=torch.bool, device=x.device)
        for name in ("pgd", "apgd_dlr"):
            adv = runner.run(ATTACKS[name], x[alive], y[alive], eps=big, norm=norm, seed=seed,
                             ids=None if ids is None else np.asarray(ids)[alive.cpu().numpy()])
            still = torch.as_tensor(predict(model, check_bounds(adv, x[alive], big, norm), y[alive])["correct"],
                                    device=x.device)
            alive[alive.nonzero()[:, 0][~still]] = False
        acc_big = float(alive.float().mean())
        checks.append({"check": f"large_eps_reaches_zero_{norm}", "passed": acc_big <= 0.1,
                       "detail": f"robust accuracy {acc_big:.3f} at eps {big:g} (expected near 0)"})
    # 4. the cascade finds adversarial examples planted inside the budget (attacks/self_test.py)
    if cascade and getattr(model, "draws", 1) == 1:
        checks.append(self_test_check(model, runner, cascade, x, grid, seed, ids))
    # 5. gradients of the attack losses are finite and non-zero on most samples
    shares = {loss: runner.usable_gradient_share(loss, x, y) for loss in ("ce", "dlr")}
    raw = _raw_ce_gradient_share(model, x, y)
    usable = max(shares.values())
    checks.append({"check": "gradients_usable", "passed": usable >= 0.9,
                   "detail": f"share of samples with finite non-zero input gradients: scale-invariant CE "
                             f"{shares['ce']:.2f}, DLR {shares['dlr']:.2f}; plain cross-entropy {raw:.2f}"
                             + (" (plain cross-entropy is saturated: a CE-only attack would be fooled)"
                                if raw < 0.9 <= usable else "")})
    return checks


def monotone_checks(grid, results) -> list[dict]:
    """Robust accuracy non-increasing in eps, for the standalone FGSM and for the worst case."""
    checks = []
    for norm in grid:
        for attack in ("fgsm", "worst_case"):
            accs = [r["robust_accuracy"] for r in results if r["norm"] == norm and r["attack"] == attack]
            if not accs:  # no FGSM curve on a query-only model
                continue
            rises = [(a, b) for a, b in zip(accs, accs[1:]) if b is not None and a is not None and b > a + 1e-9]
            checks.append({"check": f"monotone_in_eps_{attack}_{norm}", "passed": not rises,
                           "detail": f"{attack} robust accuracy by eps: {', '.join(f'{a:.3f}' for a in accs)}"})
    return checks


def self_test_check(model, runner, cascade, x, grid, seed, ids) -> dict:
    """Zimmermann et al. 2022's binarization test at each norm's middle eps, on the sanity subset."""
    ids = np.arange(len(x)) if ids is None else np.asarray(ids)
    parts = []
    for norm, eps_list in grid.items():
        eps = eps_list[len(eps_list) // 2]
        parts.append(run_self_test(model, lambda v: AttackRunner(v, num_classes=2, batch_size=runner.batch_size),
                                   cascade, x, eps, norm, seed=seed, ids=ids))
    built, found = sum(p["built"] for p in parts), sum(p["found"] for p in parts)
    return {"check": "attack_self_test", "passed": built == 0 or found >= SELF_TEST_PASS * built,
            "share": found / built if built else None,
            "detail": "; ".join(f"{p['norm']} eps {eps_label(p['norm'], p['eps'])}: the attacks found {p['found']} of "
                                f"{p['built']} adversarial examples planted inside the budget ({p['tried']} samples "
                                f"tried)" for p in parts) + f"; passes at {SELF_TEST_PASS:.0%} or more"}


def gradient_free_check(rows: pd.DataFrame, grid) -> dict:
    """Does the gradient-free Square attack break samples the gradient attacks left standing, above noise?"""
    details, passed = [], True
    for norm, eps_list in grid.items():
        sel = rows[(rows["norm"] == norm) & (rows["eps"] == max(eps_list))]
        k = int((sel["attack"] == "square").sum())
        n = k + int(sel["correct"].sum())  # the samples Square attacked: what gradient attacks left standing
        lo = wilson_ci(k, n)[0] if n else 0.0
        passed &= lo <= CONFIRM_SHARE
        details.append(f"{norm} eps {eps_label(norm, max(eps_list))}: Square broke {k} of the {n} samples the "
                       f"gradient attacks left standing (95% interval from {100 * lo:.1f}%)")
    return {"check": "gradient_free_beats_gradient", "passed": bool(passed),
            "detail": "; ".join(details) + f"; fails when the interval starts above {CONFIRM_SHARE:.0%}"}


def masking_verdict(sanity: list[dict]) -> str:
    """none | suspected (a sanity check failed) | confirmed (Square beat the gradient attacks above noise) |
    not_applicable (a query-only model: the gradient checks are not applicable, and are not passed either)."""
    if sanity and all(s.get("applicable", True) is False for s in sanity if not s["check"].startswith("monotone")):
        return "not_applicable"  # a query-only model: no gradient attack ran that could be masked
    failed = {s["check"] for s in sanity if s["passed"] is False}
    if "gradient_free_beats_gradient" in failed:
        return "confirmed"
    return "suspected" if failed else "none"


def masking_findings(masking: str, sanity: list[dict]) -> list[Finding]:
    """Confirmed masking is a `fail` (the gradient attacks' numbers are known to overstate robustness);
    a failed sanity check alone is a `warn`."""
    if masking == "confirmed":
        check = next(s for s in sanity if s["check"] == "gradient_free_beats_gradient")
        return [Finding("fail", "adversarial", "masking", "gradients", "Gradient masking confirmed: a gradient-free "
                        "attack broke samples the gradient attacks could not", check["detail"],
                        effect=check.get("share"), ci=check.get("share_ci"), evidence="#adversarial-sanity")]
    if masking == "suspected":
        failed = [s["check"] for s in sanity if s["passed"] is False]
        return [Finding("warn", "adversarial", "masking", "gradients", "Possible gradient masking: robust accuracy "
                        "may be overestimated", f"sanity check(s) failed: {', '.join(failed)}",
                        evidence="#adversarial-sanity")]
    return []


def _raw_ce_gradient_share(model, x, y) -> float:
    xg = x.detach().clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(xg).float(), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, xg)
    per = grad.flatten(1).abs().sum(dim=1)
    return float((torch.isfinite(per) & (per > 0)).float().mean())

"""The adversarial check's gate rule: min_robust_accuracy at one norm and budget."""

from __future__ import annotations

from ...errors import AuditError
from ...rules import NUMBER, RuleKind, parse_eps, result, without_evidence

ATTACK_CHOICES = ("worst_case", "fgsm")
NORMS = ("linf", "l2")


def _same_eps(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, b)


def judge_robust_accuracy(rule, adv: dict) -> dict:
    p = rule.params
    eps, attack = parse_eps(p["eps"]), p.get("attack", "worst_case")
    match = [r for r in adv["results"] if r["norm"] == p["norm"] and r["attack"] == attack and _same_eps(r["eps"], eps)]
    if not match and attack == "fgsm" and adv.get("threat_model") == "query_only":
        raise AuditError(f"rule {rule.name!r} asks for FGSM robust accuracy, which needs gradients; the model was "
                         "audited query-only (Square alone), so use attack = \"worst_case\".")
    if not match:
        have = ", ".join(sorted({f"{r['norm']} {r['eps_label']}" for r in adv["results"]}))
        raise AuditError(f"rule {rule.name!r} asks for {attack} robust accuracy at {p['norm']} {p['eps']}, which "
                         f"the audit did not compute (it has {have}); add the budget with --eps-{p['norm']} "
                         "or fix the rule.")
    r = match[0]
    metric = f"adversarial.{attack}.{r['norm']}.{r['eps_label']}"
    detail = (f"{attack} robust accuracy {r['robust_accuracy']:.4f} at {r['norm']} {r['eps_label']} "
              f"(minimum {p['threshold']})")
    passed = r["robust_accuracy"] >= p["threshold"]
    masking = adv["gradient_masking"]  # an older summary's boolean is read by compat.upgrade, before any judge
    if passed and masking in ("suspected", "confirmed"):  # the number may be inflated: no evidence it holds
        return without_evidence(rule, metric, r["robust_accuracy"], p["threshold"],
                                detail + f"; gradient masking {masking}, so the attacks may overstate it")
    if passed and adv.get("threat_model") == "query_only":  # Square alone: an upper bound, not evidence it holds
        queries = (adv.get("square") or {}).get("queries")
        return without_evidence(rule, metric, r["robust_accuracy"], p["threshold"],
                                detail + f"; the model answers queries only, so this is an upper bound from Square "
                                         f"with {queries} queries, which a white-box attack may lower")
    out = result(rule, metric, r["robust_accuracy"], p["threshold"], passed, detail)
    out["ci"] = r.get("robust_accuracy_ci")  # under --budget the gate asks whether it decides (gate/judge.py)
    return out


def plan_robust_accuracy(rule, opts, attributes) -> None:
    p = rule.params
    grid, eps = opts.grid(), parse_eps(p["eps"])
    if p["norm"] not in grid or not any(_same_eps(e, eps) for e in grid[p["norm"]]):
        have = "; ".join(f"{n}: {', '.join(f'{e:.6g}' for e in es)}" for n, es in grid.items())
        raise AuditError(f"rule {rule.name!r} asks for robust accuracy at {p['norm']} {p['eps']}, which is "
                         f"not in the planned budgets ({have}); add it with --eps-{p['norm']} or fix the rule.")


def check_rule(rule) -> None:
    """When the policy is read (also for `cnnaudit gate`, which plans nothing): values the judge would
    otherwise refuse only after the audit."""
    p = rule.params
    if p.get("attack", "worst_case") not in ATTACK_CHOICES:
        raise AuditError(f"rule {rule.name!r}: attack = {p['attack']!r} should be 'worst_case' or 'fgsm'.")
    if p["norm"] not in NORMS:
        raise AuditError(f"rule {rule.name!r}: norm = {p['norm']!r} should be one of {', '.join(NORMS)}.")
    try:
        eps = parse_eps(p["eps"])
    except AuditError as exc:
        raise AuditError(f"rule {rule.name!r}: {exc}") from None
    if not eps > 0:
        raise AuditError(f"rule {rule.name!r}: eps = {p['eps']!r} should be a positive budget such as 8/255.")


MIN_ROBUST_ACCURACY = RuleKind(
    "min_robust_accuracy", judge_robust_accuracy, plan=plan_robust_accuracy, evidence_key="on_masking",
    required={"threshold": NUMBER, "norm": (str,), "eps": (str, int, float)},
    optional={"attack": (str,), "on_masking": (str,)}, needs="--checks adversarial", validate=check_rule)

"""The gate's own rule kind, max_regression, judged one of two ways.

Unpaired (default): any gateable metric (gate/metrics.py) against the same metric in the baseline
summary.json of the last release (`--baseline`): a difference of two numbers, which cannot tell a real
regression from noise.

Paired (`paired = true`, only under `cnnaudit compare`): against the comparison's paired conditions
(comparison.py: both models on the same images, per image). `check` and `condition` select conditions
(`condition` may be a shell pattern such as "low_light_*"; both default to every condition). A condition
violates the rule when the candidate's accuracy is more than `threshold` below the baseline's and, with
`only_significant = true`, the regression is significant (exact McNemar, Holm across all conditions): a
drop of the same size from noise passes.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from ..errors import AuditError
from .metrics import catalog, higher_is_better
from ..rules import NUMBER, RuleKind, evidence_mode, result, without_evidence

NO_BASELINE = ("rule {name!r} compares against a baseline; give --baseline OLD/summary.json, or set "
               "on_missing_baseline = \"warn\" (or \"pass\") in the rule for a first release.")
NO_COMPARISON = ("rule {name!r} is paired (paired = true): it needs both models on the same images; run "
                 "`cnnaudit compare BASELINE CANDIDATE DATA --policy ...` (or `cnnaudit gate --comparison "
                 "comparison.json`), or remove paired.")
PAIRED_ONLY = ("check", "condition", "only_significant")


def check_rule(rule) -> None:
    """The keys that make sense together (called by the policy parser)."""
    p = rule.params
    if p.get("paired"):
        if "metric" in p:
            raise AuditError(f"rule {rule.name!r} is paired: it selects conditions with check and condition, not "
                             "metric; remove metric (see comparison.json for the condition names).")
        return
    extra = [k for k in PAIRED_ONLY if k in p]
    if extra:
        raise AuditError(f"rule {rule.name!r} uses {extra[0]!r}, which only a paired rule takes; add paired = true.")
    if "metric" not in p:
        raise AuditError(f"rule {rule.name!r} (max_regression) is missing 'metric'; name a metric from "
                         "`cnnaudit diff OLD NEW`, or add paired = true to judge paired conditions.")


def judge_regression(rule, summary) -> dict:
    """`summary`: the audit's summary as Evidence, with its baseline and comparison beside it."""
    baseline, comparison = summary.baseline, summary.comparison
    if rule.params.get("paired"):
        if comparison is None:
            raise AuditError(NO_COMPARISON.format(name=rule.name))
        return judge_paired(rule, comparison)
    p, m = rule.params, rule.params["metric"]
    if baseline is None:
        if evidence_mode(rule) == "fail":
            raise AuditError(NO_BASELINE.format(name=rule.name))
        return without_evidence(rule, m, None, p["threshold"], "no baseline to compare with")
    new, old = catalog(summary), catalog(baseline)
    if m not in new or m not in old:
        where = "this audit" if m not in new else "the baseline"
        raise AuditError(f"rule {rule.name!r} names metric {m!r}, which {where} does not have; see "
                         "`cnnaudit diff OLD NEW` for the metric names.")
    from ..checks import registry
    check = registry().get(m.split(".")[0])
    why = check and check.incomparable(baseline.get(check.name) or {}, summary.get(check.name) or {})
    if why:  # e.g. one audit attacked white-box, the other by Square alone
        return without_evidence(rule, m, None, p["threshold"], f"{m}: {why}, so the numbers do not compare")
    regression = round((old[m] - new[m]) if higher_is_better(m) else (new[m] - old[m]), 6)
    return result(rule, m, regression, p["threshold"], regression <= p["threshold"],
                  f"{m}: {old[m]:.4f} → {new[m]:.4f}, regression {regression:+.4f} (maximum {p['threshold']})")


def paired_conditions(rule, comparison: dict) -> list[dict]:
    """The comparison's conditions a paired rule selects; selecting none is an error, never a pass."""
    check, pattern = rule.params.get("check"), rule.params.get("condition")
    rows = [r for r in comparison["conditions"] if r.get("delta") is not None]
    chosen = [r for r in rows if (check is None or r["check"] == check)
              and (pattern is None or fnmatchcase(str(r["condition"]), pattern))]
    if not chosen:
        checks = sorted({r["check"] for r in rows})
        raise AuditError(f"rule {rule.name!r} selects no paired condition (check {check!r}, condition {pattern!r}); "
                         f"the comparison has checks {', '.join(checks) or 'none'}; see comparison.json for the "
                         "condition names, or fix the rule.")
    return chosen


def judge_paired(rule, comparison: dict) -> dict:
    p = rule.params
    threshold, significant_only = p["threshold"], p.get("only_significant", False)
    chosen = paired_conditions(rule, comparison)
    counted = [r for r in chosen if r["significant"] or not significant_only]
    worst = max(counted, key=lambda r: -r["delta"], default=None)
    value = None if worst is None else round(-worst["delta"], 6)
    bad = [r for r in counted if -r["delta"] > threshold]
    label = (f"{p.get('check') or 'every check'}" + (f" {p['condition']}" if p.get("condition") else "")
             + (" (significant only)" if significant_only else ""))
    if bad:
        listed = "; ".join(f"{r['check']} {r['condition']} {100 * r['delta']:+.1f} points (p_adj "
                           f"{r['p_adjusted']:.2g}, {r['n_regressed']} regressed, {r['n_improved']} improved)"
                           for r in bad[:3])
        detail = f"{len(bad)} paired condition(s) regressed more than {threshold}: {listed}"
    else:
        largest = min(chosen, key=lambda r: r["delta"])
        detail = (f"no paired condition of {len(chosen)} regressed more than {threshold}" +
                  (" significantly" if significant_only else "") +
                  f"; the largest drop: {largest['check']} {largest['condition']} {100 * largest['delta']:+.1f} points "
                  f"(p_adj {largest['p_adjusted']:.2g})")
    return result(rule, f"paired.{label}", value, threshold, not bad, detail)


MAX_REGRESSION = RuleKind("max_regression", judge_regression, required={"threshold": NUMBER},
                          optional={"metric": (str,), "on_missing_baseline": (str,), "paired": (bool,),
                                    "only_significant": (bool,), "check": (str,), "condition": (str,)},
                          evidence_key="on_missing_baseline", share_threshold=False, validate=check_rule)

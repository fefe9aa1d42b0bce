"""Judge a summary against a policy: one result per rule, {name, metric, value, threshold, passed,
severity, detail}. A rule about something the audit did not compute is an AuditError (exit 2), never
a pass."""

from __future__ import annotations

from ..errors import AuditError
from .metrics import catalog, higher_is_better
from .policy import EVIDENCE_KEYS, Rule, parse_eps


def judge(rules: list[Rule], summary: dict, baseline: dict | None = None) -> dict:
    results = [_judge(rule, summary, baseline) for rule in rules]
    passed = all(r["passed"] or r["severity"] == "warn" for r in results)
    return {"passed": passed, "n_failed": sum(not r["passed"] and r["severity"] == "fail" for r in results),
            "n_warnings": sum(not r["passed"] and r["severity"] == "warn" for r in results), "rules": results}


def _need(summary: dict, section: str, rule: Rule, flag: str) -> dict:
    if not summary.get(section):
        raise AuditError(f"rule {rule.name!r} needs the {section} check, which this audit did not run; "
                         f"run it ({flag}) or remove the rule.")
    return summary[section]


def _selected(rule: Rule, named: str | None, available: dict, what: str, verb: str, fix: str) -> list[str]:
    """The one item a rule names (which must exist in the audit), or all of them."""
    if named is None:
        return list(available)
    if named not in available:
        raise AuditError(f"rule {rule.name!r} names {what} {named!r}, which the audit did not {verb} (it has "
                         f"{', '.join(available) or 'none'}); {fix} or fix the rule.")
    return [named]


def _result(rule, metric, value, threshold, passed, detail, severity: str | None = None) -> dict:
    return {"name": rule.name, "kind": rule.kind, "metric": metric, "value": value, "threshold": threshold,
            "passed": bool(passed), "severity": severity or rule.severity, "detail": detail}


def evidence_mode(rule: Rule) -> str:
    """fail (default), warn or pass: the rule's own setting for when the audit has no evidence either way."""
    return rule.params.get(EVIDENCE_KEYS.get(rule.kind, ""), "fail")


def _without_evidence(rule, metric, value, threshold, why: str) -> dict:
    """No pass without evidence: the rule fails unless its on_* option relaxes it to a warning or a pass."""
    mode, key = evidence_mode(rule), EVIDENCE_KEYS[rule.kind]
    if mode == "pass":
        return _result(rule, metric, value, threshold, True, f"{why}; passed because {key} = \"pass\"")
    return _result(rule, metric, value, threshold, False,
                   f"{why}; no pass without evidence" + (f" ({key} = \"warn\")" if mode == "warn" else
                                                         f" (set {key} to relax)"),
                   severity="warn" if mode == "warn" else None)


SECTION_OF_KIND = {"min_robust_accuracy": "adversarial", "max_corruption_drop": "corruption",
                   "max_subgroup_gap": "subgroups", "no_shortcut": "shortcuts"}


def _judge(rule: Rule, summary: dict, baseline: dict | None) -> dict:
    p, kind = rule.params, rule.kind
    section = SECTION_OF_KIND.get(kind) or (p["metric"].split(".")[0] if kind == "max_regression" else None)
    if (summary.get(section) or {}).get("failed"):  # a rule never passes on a check that produced no evidence
        return _result(rule, section, None, p.get("threshold"), False,
                       f"the {section} check failed ({summary[section]['error']}); nothing to judge")
    if kind == "min_clean_accuracy":
        v = summary["clean"]["accuracy"]
        return _result(rule, "clean.accuracy", v, p["threshold"], v >= p["threshold"],
                       f"clean accuracy {v:.4f} (minimum {p['threshold']})")
    if kind == "min_robust_accuracy":
        adv = _need(summary, "adversarial", rule, "--checks adversarial")
        eps, attack = parse_eps(p["eps"]), p.get("attack", "worst_case")
        match = [r for r in adv["results"] if r["norm"] == p["norm"] and r["attack"] == attack
                 and abs(r["eps"] - eps) <= 1e-9 * max(1.0, eps)]
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
        if passed and adv.get("gradient_masking_suspected"):  # the number may be inflated: no evidence it holds
            masking = adv.get("gradient_masking", "suspected")
            return _without_evidence(rule, metric, r["robust_accuracy"], p["threshold"],
                                     detail + f"; gradient masking {masking}, so the attacks may overstate it")
        return _result(rule, metric, r["robust_accuracy"], p["threshold"], passed, detail)
    if kind == "max_corruption_drop":
        cor = _need(summary, "corruption", rule, "--checks corruption")
        which = p.get("corruption", "mean")
        drops = {k: v for k, v in cor["relative_drop"].items() if v is not None}
        if which == "mean":
            v = round(sum(drops.values()) / len(drops), 6) if drops else None
        elif which in drops:
            v = drops[which]
        else:
            raise AuditError(f"rule {rule.name!r} names corruption {which!r}, which the audit did not run (it ran "
                             f"{', '.join(cor['corruptions'])}); add it with --corruptions or fix the rule.")
        return _result(rule, f"corruption.relative_drop.{which}", v, p["threshold"],
                       v is not None and v <= p["threshold"],
                       f"accuracy drop under {which} {v:.4f} of clean (maximum {p['threshold']})")
    if kind == "max_subgroup_gap":
        sub = _need(summary, "subgroups", rule, "--checks subgroups")
        attrs = sub["attributes"]
        names = _selected(rule, p.get("attribute"), attrs, "attribute", "group by", "add it with --group-by")
        only_sig = p.get("only_significant", False)
        offending, worst, worst_attr = [], None, None
        for a in names:
            e = attrs[a]
            if e["gap"] is None:
                continue
            if worst is None or e["gap"] > worst:
                worst, worst_attr = e["gap"], a
            if e["gap"] > p["threshold"] and (e["significant"] or not only_sig):
                offending.append(a)
        insufficient = [a for a in names if attrs[a]["gap"] is None]
        detail = (f"largest gap {worst:.4f} ({worst_attr})" if worst is not None else "no attribute with two groups "
                  "large enough to compare") + f" (maximum {p['threshold']}" + (", significant gaps only)" if only_sig
                                                                               else ")")
        if offending:
            detail += f"; over the limit: {', '.join(offending)}"
        if insufficient:
            detail += f"; insufficient data: {', '.join(insufficient)}"
        metric = f"subgroups.gap.{worst_attr or names[0] if names else '-'}"
        if not offending and worst is None:  # a gap nobody could measure is not a small gap
            return _without_evidence(rule, metric, worst, p["threshold"],
                                     detail + ("" if names else "; no attribute to compare"))
        return _result(rule, metric, worst, p["threshold"], not offending, detail)
    if kind == "no_shortcut":
        sc = _need(summary, "shortcuts", rule, "--checks shortcuts --artifact NAME")
        arts = sc["artifacts"]
        names = _selected(rule, p.get("artifact"), arts, "artifact", "test", f"add --artifact {p.get('artifact')}")
        if not names:
            raise AuditError(f"rule {rule.name!r} needs at least one annotated artifact; add --artifact NAME.")
        bad = [a for a in names if arts[a]["verdict"] == "shortcut"]
        detail = ", ".join(f"{a}: {arts[a]['verdict']}" for a in names)
        if not bad and any(arts[a]["verdict"] == "inconclusive" for a in names):
            return _without_evidence(rule, "shortcuts.verdict", 0, 0, detail)
        return _result(rule, "shortcuts.verdict", len(bad), 0, not bad, detail)
    if kind == "max_regression":
        if baseline is None:
            if evidence_mode(rule) == "fail":
                raise AuditError(f"rule {rule.name!r} compares against a baseline; give --baseline OLD/summary.json, "
                                 "or set on_missing_baseline = \"warn\" (or \"pass\") for a first release.")
            return _without_evidence(rule, p["metric"], None, p["threshold"], "no baseline to compare with")
        new, old = catalog(summary), catalog(baseline)
        m = p["metric"]
        if m not in new or m not in old:
            where = "this audit" if m not in new else "the baseline"
            raise AuditError(f"rule {rule.name!r} names metric {m!r}, which {where} does not have; see "
                             "`cnnaudit diff OLD NEW` for the metric names.")
        regression = round((old[m] - new[m]) if higher_is_better(m) else (new[m] - old[m]), 6)
        return _result(rule, m, regression, p["threshold"], regression <= p["threshold"],
                       f"{m}: {old[m]:.4f} → {new[m]:.4f}, regression {regression:+.4f} (maximum {p['threshold']})")
    raise AssertionError(kind)

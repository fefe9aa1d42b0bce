"""Judge a summary against a policy: one result per rule, {name, kind, metric, value, threshold, passed,
severity, detail}. A rule about something the audit did not compute is an AuditError (exit 2), never
a pass. Each kind's judgement lives with the check whose section it reads (Check.rule_kinds)."""

from __future__ import annotations

from ..compat import upgrade
from ..errors import AuditError
from .policy import rule_kinds
from ..rules import Evidence, Rule, result


def judge(rules: list[Rule], summary: dict, baseline: dict | None = None,
          comparison: dict | None = None) -> dict:
    """`comparison`: a comparison.json (cnnaudit compare), for paired max_regression rules. Summaries of
    earlier releases are read in the current shape (compat.upgrade)."""
    kinds = rule_kinds()
    summary, baseline = upgrade(summary), None if baseline is None else upgrade(baseline)
    results = [_judge(rule, kinds, summary, baseline, comparison) for rule in rules]
    passed = all(r["passed"] or r["severity"] == "warn" for r in results)
    return {"passed": passed, "n_failed": sum(not r["passed"] and r["severity"] == "fail" for r in results),
            "n_warnings": sum(not r["passed"] and r["severity"] == "warn" for r in results), "rules": results}


def _judge(rule: Rule, kinds: dict, summary: dict, baseline: dict | None, comparison: dict | None) -> dict:
    kind, check = kinds[rule.kind]
    section = check or rule.params.get("metric", "").split(".")[0]  # max_regression: its metric's check
    # a rule never passes on a check that produced no evidence
    if section and (summary.get(section) or {}).get("failed"):
        return result(rule, section, None, rule.params.get("threshold"), False,
                      f"the {section} check failed ({summary[section]['error']}); nothing to judge")
    if check is not None and not summary.get(check):
        raise AuditError(f"rule {rule.name!r} needs the {check} check, which this audit did not run; "
                         f"run it ({kind.needs or '--checks ' + check}) or remove the rule.")
    section = summary if check is None else summary[check]
    return kind.judge(rule, Evidence(section, summary=summary, baseline=baseline, comparison=comparison))

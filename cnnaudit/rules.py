"""What a gate rule kind is, and the verdict helpers every kind shares: a low module, below both the checks
and the gate that import it.

A check declares the rule kinds that judge its summary section (`Check.rule_kinds`), next to the code
that writes the section: the policy parser, the plan check and the judge loop over the registry, so a
plugin check's rules are gateable like the built-in ones. A result is {name, kind, metric, value,
threshold, passed, severity, detail}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .errors import AuditError

NUMBER = (int, float)
EVIDENCE_MODES = ("fail", "warn", "pass")


class Evidence(dict):
    """What a rule judges: the section of the check that declared its kind (for the gate's own kinds,
    max_regression and max_findings, the whole summary), read like a dict, with the whole audit beside it
    for rules that look further: `.summary`, `.baseline` (--baseline's summary or None) and `.comparison`
    (a comparison.json under `cnnaudit compare`, or None). Every judge has one signature,
    `judge(rule, evidence) -> result`."""

    def __init__(self, section: dict, *, summary: dict, baseline: dict | None = None,
                 comparison: dict | None = None):
        super().__init__(section)
        self.summary, self.baseline, self.comparison = summary, baseline, comparison


@dataclass(frozen=True)
class RuleKind:
    """A kind of rule: its keys (each key -> accepted types), how it judges the check's summary section
    `judge(rule, evidence) -> result` (Evidence: the section, with the rest of the audit beside it), and optionally how it checks a rule against the planned audit
    before any model work, `plan(rule, options, attributes)` (raise AuditError).

    `evidence_key` names the rule's setting for when the audit has no evidence either way (gradient
    masking, no group large enough, an inconclusive verdict): fail unless the policy relaxes it.

    `about(rule, evidence) -> list[str]`, where a failure is about findings: for a failed result, the finding-id
    prefixes it fails on, one per offender (`findings.id_prefix`: `subgroups/subgroup_gap/scanner` for a gap
    over the limit on scanner); [] when it fails on none (no evidence). The rule is waived, not failed, when
    every offender has a finding an accepted waiver covers (gate/waivers.py). None: nothing to waive
    (min_clean_accuracy)."""
    name: str
    judge: Callable
    required: dict = field(default_factory=dict)
    optional: dict = field(default_factory=dict)
    plan: Callable | None = None
    evidence_key: str | None = None
    share_threshold: bool = True  # the threshold is a share in [0, 1]
    needs: str = ""  # how to make the audit compute it, e.g. "--checks adversarial"
    validate: Callable | None = None  # validate(rule): keys that only make sense together; raise AuditError
    about: Callable | None = None  # about(rule, evidence): the findings a failure is about, for waivers


@dataclass
class Rule:
    name: str
    kind: str
    severity: str = "fail"
    params: dict = field(default_factory=dict)
    evidence_key: str | None = None


def result(rule: Rule, metric, value, threshold, passed, detail, severity: str | None = None) -> dict:
    return {"name": rule.name, "kind": rule.kind, "metric": metric, "value": value, "threshold": threshold,
            "passed": bool(passed), "severity": severity or rule.severity, "detail": detail}


def evidence_mode(rule: Rule, key: str | None = None) -> str:
    """fail (default), warn or pass: the rule's own setting (its `key`, default its kind's evidence_key) for when
    the audit has no evidence either way."""
    return rule.params.get(key or rule.evidence_key or "", "fail")


def without_evidence(rule: Rule, metric, value, threshold, why: str, key: str | None = None) -> dict:
    """No pass without evidence: the rule fails unless its on_* option (`key`, default its kind's
    evidence_key) relaxes it to a warning or a pass."""
    key = key or rule.evidence_key
    mode = evidence_mode(rule, key)
    if mode == "pass":
        return result(rule, metric, value, threshold, True, f"{why}; passed because {key} = \"pass\"")
    return result(rule, metric, value, threshold, False,
                  f"{why}; no pass without evidence" + (f" ({key} = \"warn\")" if mode == "warn" else
                                                        f" (set {key} to relax)"),
                  severity="warn" if mode == "warn" else None)


def selected(rule: Rule, named: str | None, available, what: str, verb: str, fix: str) -> list[str]:
    """The one item a rule names (which must exist in the audit), or all of them."""
    if named is None:
        return list(available)
    if named not in available:
        raise AuditError(f"rule {rule.name!r} names {what} {named!r}, which the audit did not {verb} (it has "
                         f"{', '.join(available) or 'none'}); {fix} or fix the rule.")
    return [named]


def parse_eps(value) -> float:
    from .budgets import parse_budget
    try:
        return parse_budget(value)
    except (ValueError, ZeroDivisionError):
        raise AuditError(f"eps {value!r} in the policy is not a number or fraction like 8/255.") from None

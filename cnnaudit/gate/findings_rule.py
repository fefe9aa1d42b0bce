"""The gate's rule on findings, max_findings: at most `threshold` findings (default 0) at `severity_at_least`
(fail, or warn: fail and warn) of the listed `kinds` (default: every kind), from summary.findings. A finding an
accepted waiver covers (gate/waivers.py) does not count."""

from __future__ import annotations

from ..errors import AuditError
from ..findings import SEVERITIES, kinds as finding_kinds
from ..rules import NUMBER, RuleKind, result

LEVELS = ("fail", "warn")


def check_rule(rule) -> None:
    """When the policy is read, before any work: a misspelt level or kind would otherwise count nothing
    and pass (kinds = ["weak-class"] matches no finding)."""
    p = rule.params
    level = p.get("severity_at_least", "fail")
    if level not in LEVELS:
        raise AuditError(f"rule {rule.name!r}: severity_at_least = {level!r} should be 'fail' or 'warn'.")
    kinds = p.get("kinds")
    if kinds is None:
        return
    if not kinds:
        raise AuditError(f"rule {rule.name!r}: kinds = [] counts no finding; list finding kinds or remove kinds.")
    known = finding_kinds()
    for kind in kinds:
        if kind not in known:
            raise AuditError(f"rule {rule.name!r}: kinds has {kind!r}, which is not a finding kind; choose from "
                             f"{', '.join(known)}.")


def judge_findings(rule, summary: dict) -> dict:
    p = rule.params
    level = p.get("severity_at_least", "fail")
    kinds = p.get("kinds")
    at_level = [f for f in summary.get("findings") or []
                if SEVERITIES.index(f["severity"]) <= SEVERITIES.index(level) and (kinds is None or f["kind"] in kinds)]
    counted = [f for f in at_level if not f.get("waiver")]
    waived = len(at_level) - len(counted)
    limit = p.get("threshold", 0)
    titles = "; ".join(f["title"] for f in counted[:3]) + ("; ..." if len(counted) > 3 else "")
    return result(rule, f"findings.{level}", len(counted), limit, len(counted) <= limit,
                  f"{len(counted)} finding(s) at {level} or worse" + (f" of kinds {', '.join(kinds)}" if kinds else "")
                  + f" (maximum {limit})" + (f", not counting {waived} waived" if waived else "")
                  + (f": {titles}" if counted else ""))


MAX_FINDINGS = RuleKind("max_findings", judge_findings, optional={"threshold": NUMBER, "severity_at_least": (str,),
                                                                   "kinds": (list,)},
                        share_threshold=False, validate=check_rule)

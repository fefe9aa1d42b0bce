"""`cnnaudit review OUT`: the findings that need a reviewer's decision, and a [[waiver]] stub for each.

A finding needs a decision when it is at fail or warn and no waiver accepts it: with --policy, the
policy's waivers judged today (gate/waivers.py); without, the waivers the audit's own gate accepted
(findings[].waiver), unless they have expired since. The stub's reason and by are empty, which the policy
parser refuses, so a stub nobody filled in can never accept anything.
"""

from __future__ import annotations

import json
import math
from datetime import date, timedelta

from ..compat import upgrade
from .waivers import evaluate, mark

STUB_DAYS = 90  # a quarter: long enough for a retraining cycle, short enough to be looked at again


def needing_decision(summary: dict, waivers, day: date) -> tuple[list[dict], list[dict]]:
    """(the fail and warn findings no waiver accepts, in rank order; the waivers' statuses, [] without
    --policy)."""
    from .judge import without_undecided
    summary = without_undecided(upgrade(summary))  # about a rule, not the model: nothing to waive
    findings = summary.get("findings") or []
    statuses = []
    if waivers is not None:
        statuses = evaluate(waivers, summary, day)
        findings = mark(findings, statuses)
    open_ = [f for f in findings if f["severity"] in ("fail", "warn")
             and not (f.get("waiver") and date.fromisoformat(f["waiver"]["expires"]) >= day)]
    return open_, statuses


def _toml(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def _comment(text: str) -> str:
    return " ".join(str(text).split())


def stub(findings: list[dict], source: str, day: date) -> str:
    expires = day + timedelta(days=STUB_DAYS)
    lines = [f"# Waivers for the findings of {source} that need a decision (cnnaudit review, {day.isoformat()}).",
             "# For each finding you accept: say why (reason) and who accepts it (by), and check the expiry date;",
             "# delete the waivers of findings you do not accept. Then add these [[waiver]] tables to the policy",
             "# (a TOML file may simply be appended to another: cat waivers.toml >> gate.toml). An empty reason or",
             "# by is an error, so an unfilled stub accepts nothing.", ""]
    for f in findings:
        effect = f.get("effect")
        lines += [f"# [{f['severity']}] {_comment(f['title'])}", "[[waiver]]", f"finding = {_toml(f['id'])}",
                  'reason = ""', 'by = ""', f"expires = {expires.isoformat()}"]
        if effect is not None:  # a suggestion: the waiver holds only while the flaw does not grow
            bound = math.ceil((effect + 0.05) * 20) / 20
            lines.append(f'# until_metric = "effect < {bound:.2f}"  # optional: only while it does not get worse')
        lines.append("")
    return "\n".join(lines)

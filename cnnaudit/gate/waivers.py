"""Waivers: a reviewer's acceptance of a finding, with a reason, a name and an expiry, kept in the policy.

    [[waiver]]
    finding = "subgroups/subgroup_gap/scanner"     # a finding id, a prefix of ids, or a glob
    reason = "scanner C is retired in March (ticket ML-412); documented in the model card"
    by = "j.doe@example.com"
    expires = 2027-03-31                            # a TOML date: the waiver holds through that day
    until_metric = "subgroups.gap.scanner < 0.4"    # optional: and only while this holds

`finding` matches an id exactly, as a prefix ending at a segment boundary (`/`, `=`, `:`, `@`, `~`:
`subgroups/subgroup_gap/scanner` matches `.../scanner=C` and `.../scanner=C@round`, never
`.../scanner2=C`), or as a shell glob when it holds `*`, `?` or `[`. `expires` is required: a waiver
without one is a permanent suppression, which waivers exist to avoid. `until_metric` is "NAME OP X", OP one
of < <= > >=, NAME a gate metric (gate/metrics.py) or `effect`, the waived finding's own effect (which
must hold for every finding the waiver matches).

When judged (judge.py), each waiver is, in this order of precedence:
- `stale`: it matches no finding of the audit (the flaw is gone, or the id is mistyped): remove it;
- `expired`: today is after `expires`;
- `condition_failed`: its until_metric no longer holds (the value is said);
- `accepted`: otherwise. Its findings stay in the findings, marked with the waiver (`waiver`); max_findings
  does not count them, and a rule whose failure is only about them (RuleKind.about) is waived, not failed.
Only an accepted waiver counts for anything; the others are reported, and the findings they name count
again, which is what fails the gate. "Today" is the date of judging; CNNAUDIT_TODAY=YYYY-MM-DD sets it
(for tests and for replaying a past judgement).
"""

from __future__ import annotations

import operator
import os
import re
from dataclasses import dataclass
from datetime import date, datetime
from fnmatch import fnmatchcase

from ..errors import AuditError

KEYS = {"finding": (str,), "reason": (str,), "by": (str,), "expires": (date,), "until_metric": (str,)}
REQUIRED = ("finding", "reason", "by", "expires")
BOUNDARIES = "/=:@~"
GLOB = "*?["
OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
CONDITION = re.compile(r"^\s*(?P<name>[^\s<>=]+)\s*(?P<op><=|>=|<|>)\s*(?P<bound>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$")
TODAY_ENV = "CNNAUDIT_TODAY"
STATUSES = ("accepted", "expired", "condition_failed", "stale")
# a check that crashed, or a gate rule a --budget sample cannot decide, is no flaw to accept: never waived
UNWAIVABLE = ("check_failed", "undecided")

EMPTY = "{label}: {key} is empty, and an unfilled waiver accepts nothing; {fix}."
FIX = {"reason": "say why the finding is accepted (a known limitation, a ticket, a retraining date)",
       "by": "name who accepts it"}


@dataclass(frozen=True)
class Waiver:
    index: int
    finding: str
    reason: str
    by: str
    expires: date
    until_metric: str | None = None

    @property
    def label(self) -> str:
        return f"waiver {self.index} ({self.finding!r})"

    def as_dict(self) -> dict:
        out = {"finding": self.finding, "reason": self.reason, "by": self.by, "expires": self.expires.isoformat()}
        if self.until_metric is not None:
            out["until_metric"] = self.until_metric
        return out


def parse_waivers(raw, where: str) -> list[Waiver]:
    """The [[waiver]] tables of a policy; every mistake is an AuditError naming the waiver and the fix."""
    if not isinstance(raw, list):
        raise AuditError(f"{where}: waiver should be a list of [[waiver]] tables.")
    out, seen = [], set()
    for i, w in enumerate(raw, 1):
        label = f"{where}: waiver {i}" + (f" ({w.get('finding')!r})" if isinstance(w, dict) and w.get("finding") else "")
        if not isinstance(w, dict):
            raise AuditError(f"{label} is not a table.")
        for key, value in w.items():
            if key not in KEYS:
                raise AuditError(f"{label} has unknown key {key!r}; a waiver takes {', '.join(KEYS)}.")
            if key == "expires" and (isinstance(value, datetime) or not isinstance(value, date)):
                raise AuditError(f"{label}: expires = {value!r} should be a TOML date without quotes or time, like "
                                 "expires = 2027-03-31.")
            if not isinstance(value, KEYS[key]):
                raise AuditError(f"{label}: {key} = {value!r} should be a string.")
        missing = [k for k in REQUIRED if k not in w]
        if missing:
            why = (" (a waiver without an expiry is a permanent suppression; give a date to look at it again)"
                   if missing[0] == "expires" else "")
            raise AuditError(f"{label} is missing {missing[0]!r}{why}.")
        if not w["finding"].strip():
            raise AuditError(f"{label}: finding is empty; give a finding id from summary.json or the report.")
        for key in ("reason", "by"):
            if not w[key].strip():
                raise AuditError(EMPTY.format(label=label, key=key, fix=FIX[key]))
        _check_pattern(label, w["finding"])
        if "until_metric" in w:
            parse_condition(w["until_metric"], label)
        if w["finding"] in seen:
            raise AuditError(f"{label}: another waiver names the same finding; merge the two.")
        seen.add(w["finding"])
        out.append(Waiver(i, w["finding"], w["reason"].strip(), w["by"].strip(), w["expires"], w.get("until_metric")))
    return out


def _check_pattern(label: str, pattern: str) -> None:
    """A misspelt check or kind would match nothing, quietly: its leading segments must be real ones."""
    from ..checks import registry
    from ..findings import kinds
    parts = pattern.split("/")
    for part, known, what in ((parts[0], list(registry()), "check"), (parts[1] if len(parts) > 1 else None, kinds(),
                                                                      "finding kind")):
        if part is not None and not any(c in part for c in GLOB) and part not in known:
            raise AuditError(f"{label}: {part!r} is not a {what}; a finding id is check/kind/subject ({what}s: "
                             f"{', '.join(known)}), as summary.json and the report show it.")


def parse_condition(text: str, label: str) -> tuple[str, str, float]:
    """"subgroups.gap.scanner < 0.3" -> (name, op, bound)."""
    from ..checks import registry
    m = CONDITION.match(text)
    if not m:
        raise AuditError(f"{label}: until_metric = {text!r} should read \"METRIC < X\" (or <=, >, >=), like "
                         "\"subgroups.gap.scanner < 0.3\" or \"effect < 0.4\".")
    name = m["name"]
    check = name.split("/", 1)[-1].split(".")[0]  # a multi-label audit's metrics are `<label>/<metric>`
    if name != "effect" and check not in registry():
        raise AuditError(f"{label}: until_metric names {name!r}, which is neither effect nor a gate metric (they "
                         "start with a check name; see `cnnaudit diff OLD NEW` for the names).")
    return name, m["op"], float(m["bound"])


def today() -> date:
    text = os.environ.get(TODAY_ENV)
    if not text:
        return date.today()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise AuditError(f"{TODAY_ENV}={text!r} is not a date like 2027-03-31; fix it or unset it (it sets the day "
                         "waivers are judged on, for tests).") from None


def matches(pattern: str, fid: str) -> bool:
    """An exact id, a prefix of it ending at a segment boundary, or a glob."""
    if any(c in pattern for c in GLOB) and fnmatchcase(fid, pattern):
        return True
    return covers(pattern, fid)


def covers(prefix: str, fid: str) -> bool:
    return fid == prefix or (fid.startswith(prefix) and fid[len(prefix)] in BOUNDARIES)


def evaluate(waivers: list[Waiver], summary: dict, day: date) -> list[dict]:
    """Each waiver's status against the audit's findings: {finding, reason, by, expires, [until_metric],
    status, findings (the ids it matches), detail}."""
    findings = summary.get("findings") or []
    out = []
    for w in waivers:
        matched = [f for f in findings if matches(w.finding, f["id"]) and f["kind"] not in UNWAIVABLE]
        ids = [f["id"] for f in matched]
        if not matched:
            status, detail = "stale", "matches no finding of this audit; remove it (or fix its finding id)"
        elif day > w.expires:
            status, detail = "expired", (f"expired on {w.expires.isoformat()}; {_count(ids)} count again: renew it "
                                         "with a new reason and date, or fix the finding")
        else:
            broken = _broken_condition(w, matched, summary)
            if broken:
                status, detail = "condition_failed", (f"until_metric {w.until_metric!r} no longer holds ({broken}); "
                                                      f"{_count(ids)} count again")
            else:
                status, detail = "accepted", (f"accepts {_count(ids)} until {w.expires.isoformat()}"
                                              + (f" while {w.until_metric}" if w.until_metric else ""))
        out.append({**w.as_dict(), "status": status, "findings": ids, "detail": detail})
    return out


def _count(ids: list[str]) -> str:
    return f"{len(ids)} finding(s) ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"


def _broken_condition(w: Waiver, matched: list[dict], summary: dict) -> str:
    """'' when until_metric holds (or there is none); else what broke it, with its value."""
    if w.until_metric is None:
        return ""
    name, op, bound = parse_condition(w.until_metric, w.label)
    if name == "effect":
        values = [(f"effect of {f['id']}", f.get("effect")) for f in matched]
    else:
        from .metrics import catalog
        metrics = catalog(summary)
        # a metric the audit lacks (its check failed) is not measured: the waiver's condition does not hold
        values = [(name, metrics.get(name))]
    broken = [(n, v) for n, v in values if v is None or not OPS[op](v, bound)]
    return "; ".join(f"{n} is {'not measured' if v is None else f'{v:.4g}'}" for n, v in broken)


def mark(findings: list[dict], statuses: list[dict]) -> list[dict]:
    """The findings, each an accepted waiver matches carrying it (`waiver`: finding, reason, by, expires,
    until_metric); the first accepted waiver that matches a finding is its waiver. A mark an earlier
    judgement left on the summary is dropped: only these waivers count."""
    findings = [{k: v for k, v in f.items() if k != "waiver"} if "waiver" in f else f for f in findings]
    by_id: dict[str, dict] = {}
    for s in statuses:
        if s["status"] == "accepted":
            for fid in s["findings"]:
                by_id.setdefault(fid, {k: s[k] for k in ("finding", "reason", "by", "expires", "until_metric") if k in s})
    return [{**f, "waiver": by_id[f["id"]]} if f.get("id") in by_id else f for f in findings]


def waive_rule(result: dict, about: list[str], findings: list[dict]) -> dict:
    """A failed rule whose failure is only about waived findings: passed, with `waived` naming them. `about`:
    the finding-id prefixes the failure is about, one per offender (RuleKind.about); an offender with no
    waived finding keeps the rule failed."""
    if result["passed"] or not about:
        return result
    covered = {p: [f["id"] for f in findings if f.get("waiver") and covers(p, f["id"])] for p in about}
    ids = list(dict.fromkeys(i for p in about for i in covered[p]))
    open_ = [p for p in about if not covered[p]]
    if open_:
        if ids:
            return {**result, "detail": f"{result['detail']}; waived: {', '.join(ids)}, but not: {', '.join(open_)}"}
        return result
    return {**result, "passed": True, "waived": ids,
            "detail": f"{result['detail']}; waived: {', '.join(ids)} (accepted by a waiver)"}


def problems(gate: dict) -> list[dict]:
    """The waivers that count for nothing: expired, condition_failed, stale."""
    return [w for w in gate.get("waivers") or [] if w["status"] != "accepted"]

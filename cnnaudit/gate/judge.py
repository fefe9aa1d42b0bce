"""Judge a summary against a policy: one result per rule, {name, kind, metric, value, threshold, passed,
severity, detail}. A rule about something the audit did not compute is an AuditError (exit 2), never
a pass. Each kind's judgement lives with the check whose section it reads (Check.rule_kinds)."""

from __future__ import annotations

from datetime import date

from ..compat import upgrade
from ..errors import AuditError
from .policy import rule_kinds
from .waivers import Waiver, evaluate, mark, today as today_, waive_rule
from ..rules import Evidence, Rule, result, without_evidence


def judge(rules: list[Rule], summary: dict, baseline: dict | None = None,
          comparison: dict | None = None, *, waivers: list[Waiver] | None = None, today: date | None = None) -> dict:
    """`comparison`: a comparison.json (cnnaudit compare), for paired max_regression rules. Summaries of
    earlier releases are read in the current shape (compat.upgrade). `waivers`: default the policy's own
    (Policy.waivers), judged on `today` (default: waivers.today()); with any, the gate has `waivers`, each
    waiver's status (gate/waivers.py), and mark() puts the accepted ones on the summary's findings."""
    kinds = rule_kinds()
    summary, baseline = upgrade(summary), None if baseline is None else upgrade(baseline)
    summary = without_undecided(summary)  # an earlier judgement's own findings are not evidence for this one
    waivers = getattr(rules, "waivers", []) if waivers is None else waivers
    statuses = evaluate(waivers, summary, today or today_()) if waivers else []
    summary["findings"] = mark(summary.get("findings") or [], statuses)
    results = [_judge_labels(rule, kinds, summary, baseline, comparison) for rule in rules]
    passed = all(r["passed"] or r["severity"] == "warn" for r in results)
    out = {"passed": passed, "n_failed": sum(not r["passed"] and r["severity"] == "fail" for r in results),
           "n_warnings": sum(not r["passed"] and r["severity"] == "warn" for r in results), "rules": results}
    if waivers:
        out["waivers"] = statuses
    return out


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
    evidence = Evidence(section, summary=summary, baseline=baseline, comparison=comparison)
    out = undecided(rule, kind.judge(rule, evidence), check, summary)
    if not out["passed"] and not out.get("undecided") and kind.about is not None:
        out = waive_rule(out, kind.about(rule, evidence), summary.get("findings") or [])
    return out


def undecided(rule: Rule, judged: dict, check: str | None, summary: dict) -> dict:
    """A rule on a check that --budget or --precision gave a sample, whose value's 95% interval (`ci` in the
    judge's result) holds the threshold: the sample cannot tell pass from fail, so the rule has no evidence
    either way and its `on_insufficient` applies (fail unless relaxed). The result says the interval and the
    images, and `undecided` marks it (the CLI adds a finding). A check that ran on every image is judged as
    ever: its interval is as narrow as this data allows."""
    ci, planned = judged.get("ci"), ((summary.get("plan") or {}).get("checks") or {}).get(check or "")
    if not ci or planned is None or planned["images"] >= planned["available"] or judged.get("value") is None:
        return judged
    threshold = judged.get("threshold")
    if not isinstance(threshold, (int, float)) or not ci[0] < threshold < ci[1]:
        return judged
    why = (f"{judged['detail']}; on the {planned['images']} of {planned['available']} images the plan gave "
           f"{check}, its 95% interval {ci[0]:.4f}-{ci[1]:.4f} holds the threshold, so this sample cannot decide "
           "the rule (a larger --budget or --precision can)")
    return {**judged, **without_evidence(rule, judged["metric"], judged["value"], threshold, why, key="on_insufficient"),
            "undecided": {"images": planned["images"], "available": planned["available"], "ci": ci}}


def label_summary(summary: dict, label: str) -> dict:
    """A multi-label summary as the single-label summary of one label's two-class view: its sections, and the
    findings about it."""
    from ..data.dataset import absent
    return {**summary, **summary["per_label"][label], "task": "multiclass",
            "data": {**summary["data"], "classes": [absent(label), label]},
            "findings": [f for f in summary.get("findings", []) if f.get("label") == label]}


def without_undecided(summary: dict) -> dict:
    """The summary without the `undecided` findings (and their root causes) a gated run added after judging."""
    drop = {f["id"] for f in summary.get("findings") or [] if f.get("kind") == "undecided"}
    if not drop:
        return summary
    return {**summary, "findings": [f for f in summary["findings"] if f["id"] not in drop],
            "root_causes": [c for c in summary.get("root_causes") or [] if c["id"] not in drop]}


def undecided_findings(gate: dict, summary: dict) -> tuple[list[dict], list[dict]]:
    """The summary's findings and root causes with one `undecided` finding per rule a --budget sample could not
    decide, ranked in, each its own root cause (it is about a rule, not about images)."""
    from ..findings import SEVERITIES, Finding, rank, unique_ids
    findings, causes = summary.get("findings") or [], summary.get("root_causes") or []
    extra = [{**Finding(r["severity"] if not r["passed"] else "warn", r["metric"].split(".")[0] or "gate",
                        "undecided", r["name"],
                        f"Gate rule {r['name']!r} cannot be decided on the images the plan gave", r["detail"],
                        evidence="#plan").as_dict(), "n_images": None} for r in gate["rules"] if r.get("undecided")]
    if not extra:
        return findings, causes
    findings = unique_ids(rank([*findings, *extra]))
    new = [f for f in findings if "root_cause" not in f]
    for f in new:
        f["root_cause"] = f["id"]
    causes = [*causes, *({"id": f["id"], "title": f["title"], "severity": f["severity"], "findings": [f["id"]],
                          "n_images": None} for f in new)]
    return findings, sorted(causes, key=lambda c: SEVERITIES.index(c["severity"]))  # stable: the order within


def _per_label(rule: Rule, kinds: dict, summary: dict) -> bool:
    """Whether the rule judges each label's own sections (rather than the joint multilabel section, or the
    findings of the whole audit)."""
    kind, check = kinds[rule.kind]
    if check == "multilabel":
        return False
    if rule.kind == "max_findings":
        return False
    if rule.kind == "max_regression":  # a joint metric, or one already named `<label>/<metric>`
        metric = str(rule.params.get("metric", ""))
        return not (metric.startswith("multilabel.") or "/" in metric)
    return True


def _judge_labels(rule: Rule, kinds: dict, summary: dict, baseline: dict | None, comparison: dict | None) -> dict:
    """A rule on a multi-label audit: judged on each label's sections (or the one its `label` names); it passes
    when every label passes, and its result names the label that decided it."""
    label = rule.params.get("label")
    multilabel = summary.get("task") == "multilabel"
    if label is not None and not multilabel:
        raise AuditError(f"rule {rule.name!r} names label {label!r}, but this audit is not multi-label; remove "
                         "the label key.")
    if not multilabel or not _per_label(rule, kinds, summary):
        if multilabel and label is not None and rule.kind == "max_findings":
            summary = {**summary, "findings": [f for f in summary["findings"] if f.get("label") == label]}
        return _judge(rule, kinds, summary, baseline, comparison)
    labels = list(summary.get("per_label") or {})
    if label is not None and label not in labels:
        raise AuditError(f"rule {rule.name!r} names label {label!r}, which this audit does not have (labels: "
                         f"{', '.join(labels)}); fix the rule.")
    if rule.kind == "max_regression" and baseline is not None and baseline.get("task") != "multilabel":
        raise AuditError(f"rule {rule.name!r} compares a multi-label audit with a baseline that is not; give the "
                         "baseline's multi-label summary.")
    judged = []
    for name in ([label] if label is not None else labels):
        check = _kind_check(kinds, rule)
        if check not in (None, *summary["per_label"][name]) and label is None \
                and any(check in sections for sections in summary["per_label"].values()):
            # the check ran on other labels only (--labels): no evidence for this one, never a pass
            judged.append((name, without_evidence(rule, f"{check}", None, rule.params.get("threshold"),
                                                  f"the {check} check did not run on label {name!r} (--labels)")))
            continue
        base = label_summary(baseline, name) if baseline is not None and name in (baseline.get("per_label") or {}) \
            else (None if rule.kind == "max_regression" and baseline is not None else baseline)
        if rule.kind == "max_regression" and baseline is not None and base is None:
            raise AuditError(f"rule {rule.name!r}: the baseline has no label {name!r}; give a baseline with the same "
                             "labels.")
        mine = comparison if comparison is None or not any("label" in r for r in comparison.get("conditions", [])) \
            else {**comparison, "conditions": [r for r in comparison["conditions"] if r.get("label") == name]}
        judged.append((name, _judge(rule, kinds, label_summary(summary, name), base, mine)))
    if not judged:
        check = _kind_check(kinds, rule)
        raise AuditError(f"rule {rule.name!r} needs the {check} check, which this audit ran on no label; run it "
                         "(--labels) or remove the rule.")
    failing = [(n, r) for n, r in judged if not r["passed"]]
    name, decisive = (failing or judged)[0]
    out = dict(decisive)
    out["metric"] = f"{name}: {decisive['metric']}"
    out["label"] = name
    out["passed"] = not failing
    if failing:
        out["severity"] = "fail" if any(r["severity"] == "fail" for _, r in failing) else "warn"
    out["detail"] = "; ".join(f"{n}: {r['detail']}" for n, r in judged)
    waived = [i for _, r in judged for i in r.get("waived", [])]
    if waived and not failing:
        out["waived"] = waived
    else:
        out.pop("waived", None)
    return out


def _kind_check(kinds: dict, rule: Rule):
    kind, check = kinds[rule.kind]
    return check or str(rule.params.get("metric", "")).split(".")[0] or None

"""Gate results for CI systems and people: JUnit XML, Markdown, plain text. Pure functions of the gate."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from ..markdown import escape as _md


def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def junit_xml(gate: dict, suite: str = "cnnaudit gate", findings: list[dict] | None = None) -> str:
    """One testcase per rule. A failed `fail` rule is a <failure>; a failed `warn` rule passes with its
    warning in <system-out> (CI systems show it without failing the build). The audit's fail and warn
    findings are listed in the suite's <system-out> by id, with their waivers, then each waiver's status: the
    gate, not a finding, decides the build (gate on findings with a max_findings rule). A rule a waiver
    accepted passes with WAIVED and its detail in <system-out>. Follows the JUnit schema that Jenkins, GitLab and GitHub test
    reporters read (testsuites/testsuite/testcase)."""
    rules = gate["rules"]
    failures = sum(not r["passed"] and r["severity"] == "fail" for r in rules)
    root = ET.Element("testsuites", name="cnnaudit", tests=str(len(rules)), failures=str(failures), errors="0")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(rules)), failures=str(failures), errors="0",
                       skipped="0", time="0")
    for r in rules:
        tc = ET.SubElement(ts, "testcase", name=r["name"], classname=f"cnnaudit.gate.{r['kind']}", time="0")
        if not r["passed"] and r["severity"] == "fail":
            f = ET.SubElement(tc, "failure", message=r["detail"], type=r["kind"])
            f.text = f"{r['metric']} = {_fmt(r['value'])}, threshold {_fmt(r['threshold'])}"
        elif not r["passed"]:
            ET.SubElement(tc, "system-out").text = f"WARNING: {r['detail']}"
        elif r.get("waived"):
            ET.SubElement(tc, "system-out").text = f"WAIVED: {r['detail']}"
    shown = [f for f in findings or [] if f["severity"] != "info"]
    lines = [f"[{f['severity']}] {f.get('id', '')}: {f['title']}" + (f" (waived: {_waived(f['waiver'])})"
                                                                        if f.get("waiver") else "") for f in shown]
    lines = (["findings:", *lines] if lines else []) + _waiver_lines(gate)
    if lines:
        ET.SubElement(ts, "system-out").text = "\n".join(lines)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def markdown(gate: dict, summary: dict | None = None) -> str:
    head = "✅ **cnnaudit gate passed**" if gate["passed"] else f"❌ **cnnaudit gate failed** ({gate['n_failed']} rule(s))"
    lines = [head, ""]
    if summary:
        m = summary.get("model", {})
        lines += [f"Model {_md(m.get('path'))} (sha256 `{(m.get('sha256') or 'n/a')[:12]}`), "
                  f"{summary.get('data', {}).get('n_samples')} images, seed {summary.get('seed')}.", ""]
    lines += ["| rule | metric | value | threshold | result |", "|---|---|---|---|---|"]
    for r in gate["rules"]:
        mark = ("✅ waived" if r.get("waived") else "✅ pass") if r["passed"] else (
            "⚠️ warn" if r["severity"] == "warn" else "❌ fail")
        lines.append(f"| {_md(r['name'])} | {_md(r['metric'])} | {_fmt(r['value'])} | {_fmt(r['threshold'])} | {mark} |")
    failed = [r for r in gate["rules"] if not r["passed"] or r.get("waived")]
    if failed:
        lines += ["", *[f"- **{_md(r['name'])}**: {_md(r['detail'])}" for r in failed]]
    if gate.get("waivers"):
        lines += ["", "**Waivers**:", ""]
        lines += [f"- {'✅' if w['status'] == 'accepted' else '⚠️'} {_code(w['finding'])} **{w['status']}** (by "
                  f"{_md(w['by'])}, until {w['expires']}: {_md(w['reason'])}): {_md(w['detail'])}"
                  for w in gate["waivers"]]
    shown = [f for f in (summary or {}).get("findings") or [] if f["severity"] != "info"]
    if shown:
        mark = {"fail": "❌", "warn": "⚠️"}
        lines += ["", f"**Where it fails** ({len(shown)} finding(s), ranked):", ""]
        lines += [f"{i}. {mark[f['severity']]} {_md(f['title'])}" + (f" (effect {100 * f['effect']:.1f}%)"
                                                                      if f["effect"] is not None else "")
                  + (f" {_code(f['id'])}" if f.get("id") else "")
                  + (f" (waived: {_md(_waived(f['waiver']))})" if f.get("waiver") else "")
                  for i, f in enumerate(shown[:MARKDOWN_FINDINGS], 1)]
        if len(shown) > MARKDOWN_FINDINGS:
            lines.append(f"\n… and {len(shown) - MARKDOWN_FINDINGS} more in the report.")
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    """An id in a code span, to copy; one holding a backtick (a metadata value can) escaped as text instead."""
    return _md(text) if "`" in text or "\n" in text else f"`{text}`"


MARKDOWN_FINDINGS = 10  # a pull-request comment stays short; the report has them all


def text(gate: dict) -> str:
    lines = [f"gate {'PASSED' if gate['passed'] else 'FAILED'}"]
    for r in gate["rules"]:
        mark = ("WAIVED" if r.get("waived") else "pass") if r["passed"] else ("WARN" if r["severity"] == "warn" else "FAIL")
        lines.append(f"  [{mark}] {r['name']}: {r['detail']}")
    lines += [f"  {line}" for line in _waiver_lines(gate)]
    return "\n".join(lines)


def _waived(w: dict) -> str:
    """A finding's waiver in a few words: who, until when, why."""
    return f"by {w['by']} until {w['expires']}: {w['reason']}"


def _waiver_lines(gate: dict) -> list[str]:
    """One line per waiver: accepted ones as a record, expired, condition_failed and stale ones as warnings."""
    return [f"[{'waiver' if w['status'] == 'accepted' else 'WARN'}] waiver {w['finding']!r} {w['status']} (by "
            f"{w['by']}): {w['detail']}" for w in gate.get("waivers") or []]


def diff_text(rows: list[dict], findings: dict | None = None) -> str:
    out = _metrics_text(rows)
    for change in ("new", "resolved"):
        for f in (findings or {}).get(change, []):
            out += f"\n{change} finding: [{f['severity']}] {f['id']}: {f['title']}"
    return out


def _metrics_text(rows: list[dict]) -> str:
    width = max([len(r["metric"]) for r in rows] + [6])
    out = [f"{'metric':{width}}  {'old':>9}  {'new':>9}  {'delta':>9}  change"]
    for r in rows:
        delta = "n/a" if r["delta"] is None else f"{r['delta']:+.4f}"
        out.append(f"{r['metric']:{width}}  {_fmt(r['old']):>9}  {_fmt(r['new']):>9}  {delta:>9}  {r['change']}")
    return "\n".join(out)

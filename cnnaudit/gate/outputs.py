"""Gate results for CI systems and people: JUnit XML, Markdown, plain text. Pure functions of the gate."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from ..markdown import escape as _md


def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def junit_xml(gate: dict, suite: str = "cnnaudit gate", findings: list[dict] | None = None) -> str:
    """One testcase per rule. A failed `fail` rule is a <failure>; a failed `warn` rule passes with its
    warning in <system-out> (CI systems show it without failing the build). The audit's fail and warn
    findings are listed in the suite's <system-out>: the gate, not a finding, decides the build (gate on
    findings with a max_findings rule). Follows the JUnit schema that Jenkins, GitLab and GitHub test
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
    shown = [f for f in findings or [] if f["severity"] != "info"]
    if shown:
        ET.SubElement(ts, "system-out").text = "findings:\n" + "\n".join(
            f"[{f['severity']}] {f['title']} ({f['check']}, {f['kind']})" for f in shown)
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
        mark = "✅ pass" if r["passed"] else ("⚠️ warn" if r["severity"] == "warn" else "❌ fail")
        lines.append(f"| {_md(r['name'])} | {_md(r['metric'])} | {_fmt(r['value'])} | {_fmt(r['threshold'])} | {mark} |")
    failed = [r for r in gate["rules"] if not r["passed"]]
    if failed:
        lines += ["", *[f"- **{_md(r['name'])}**: {_md(r['detail'])}" for r in failed]]
    shown = [f for f in (summary or {}).get("findings") or [] if f["severity"] != "info"]
    if shown:
        mark = {"fail": "❌", "warn": "⚠️"}
        lines += ["", f"**Where it fails** ({len(shown)} finding(s), ranked):", ""]
        lines += [f"{i}. {mark[f['severity']]} {_md(f['title'])}" + (f" (effect {100 * f['effect']:.1f}%)"
                                                                      if f["effect"] is not None else "")
                  for i, f in enumerate(shown[:MARKDOWN_FINDINGS], 1)]
        if len(shown) > MARKDOWN_FINDINGS:
            lines.append(f"\n… and {len(shown) - MARKDOWN_FINDINGS} more in the report.")
    return "\n".join(lines) + "\n"


MARKDOWN_FINDINGS = 10  # a pull-request comment stays short; the report has them all


def text(gate: dict) -> str:
    lines = [f"gate {'PASSED' if gate['passed'] else 'FAILED'}"]
    for r in gate["rules"]:
        mark = "pass" if r["passed"] else ("WARN" if r["severity"] == "warn" else "FAIL")
        lines.append(f"  [{mark}] {r['name']}: {r['detail']}")
    return "\n".join(lines)


def diff_text(rows: list[dict], findings: dict | None = None) -> str:
    out = _metrics_text(rows)
    for change in ("new", "resolved"):
        for f in (findings or {}).get(change, []):
            out += f"\n{change} finding: [{f['severity']}] {f['title']}"
    return out


def _metrics_text(rows: list[dict]) -> str:
    width = max([len(r["metric"]) for r in rows] + [6])
    out = [f"{'metric':{width}}  {'old':>9}  {'new':>9}  {'delta':>9}  change"]
    for r in rows:
        delta = "n/a" if r["delta"] is None else f"{r['delta']:+.4f}"
        out.append(f"{r['metric']:{width}}  {_fmt(r['old']):>9}  {_fmt(r['new']):>9}  {delta:>9}  {r['change']}")
    return "\n".join(out)

"""Render the HTML report from results. Templates only present; every number comes from the summary."""

from __future__ import annotations

import jinja2

from . import svg
from .templates import template_dir


def _pct(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100.0 * value:.{digits}f}%"


def _ci(interval, digits: int = 1) -> str:
    return "" if not interval else f"[{_pct(interval[0], digits)}, {_pct(interval[1], digits)}]"


def _heat(value: float, peak: float) -> str:
    """Background for a confusion-matrix cell: white to blue by share of the row maximum."""
    a = 0.0 if not peak else min(1.0, value / peak)
    return f"background: rgba(37, 99, 235, {a * 0.85:.2f}); color: {'#fff' if a > 0.55 else '#111'}"


def _score(value) -> str:
    """Background for an accuracy-like cell: light red at 0 through light amber to light green at 1."""
    if value is None:
        return ""
    v = max(0.0, min(1.0, float(value)))
    return f"background: hsl({int(120 * v)}, 70%, 88%)"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        # cnnaudit's templates, then those of plugin checks that bring their own folder
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(template_dir())),
                                    *(jinja2.FileSystemLoader(d) for d in _plugin_template_dirs())]),
        autoescape=True,  # class names, paths and metadata are untrusted text
        undefined=jinja2.StrictUndefined,  # a template typo fails the test suite, not silently blanks a number
        trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_pct, ci=_ci, heat=_heat, score=_score)
    env.globals.update(svg=svg)
    return env


def render_report(summary: dict, results, thumbnails: dict | None = None, per_label: dict | None = None) -> str:
    """The report. A multi-label audit (`per_label`: {label: [CheckResult]}) gets a panel per label, chosen
    with the label selector, each laid out like a single-label report's sections over that label's results."""
    env = environment()
    sections = [_section(env, r) for r in results]
    labels = [_label_panel(env, summary, name, label_results) for name, label_results in (per_label or {}).items()]
    from .explorer import SCRIPT, explorer, script_hash
    return env.get_template("report.html.j2").render(summary=summary, sections=sections, thumbs=thumbnails or {},
                                                     causes=root_causes(summary),
                                                     explorer=None if labels else explorer(results, summary),
                                                     explorer_script=SCRIPT, script_hash=script_hash(), labels=labels)


def root_causes(summary: dict) -> list[dict]:
    """summary.root_causes as the report lists them: each with its findings, each finding with its number in
    the ranked list (its anchor, finding-N). A summary without root causes (written before 0.9.0): each finding
    is its own."""
    number = {f["id"]: i for i, f in enumerate(summary["findings"], 1)}
    causes = summary.get("root_causes") or [
        {"id": f["id"], "title": f["title"], "severity": f["severity"], "findings": [f["id"]], "n_images": None}
        for f in summary["findings"]]
    return [{**c, "members": [(number[i], summary["findings"][number[i] - 1]) for i in c["findings"]]}
            for c in causes]


def _section(env, r) -> dict:
    from .views import view_of
    return {"name": r.name, "title": _title_of(r.name), "summary": r.summary, "report": r.report,
            "view": view_of(r.name, r.summary, r.report), "findings": r.findings,
            "template": env.get_template(FAILED if r.summary.get("failed") else _template_of(r.name))}


def _label_panel(env, summary: dict, name: str, results) -> dict:
    """One label's panel: its sections, rendered with the label's own summary (its two-class view) in place of
    the audit's, so each section template reads what it reads in a single-label report."""
    from ..data.dataset import absent
    from ..multilabel.audit import anchor
    own = {**summary, **summary["per_label"][name], "data": {**summary["data"], "classes": [absent(name), name]},
           "findings": [f for f in summary["findings"] if f.get("label") == name]}
    return {"name": name, "anchor": anchor(name), "summary": own, "sections": [_section(env, r) for r in results]}


FAILED = "sections/failed.html.j2"


def _template_of(name: str) -> str:
    from ..checks import registry
    return registry()[name].template


def _title_of(name: str) -> str:
    from ..checks import registry
    return registry()[name].title


def _plugin_template_dirs() -> list[str]:
    from ..checks import registry
    return list(dict.fromkeys(str(c.template_dir) for c in registry().values() if c.template_dir))

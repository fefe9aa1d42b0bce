"""What the report shows that is not a number in summary.json as such: headline KPIs, chart series and
aggregated table cells, computed here from a check's summary section, so that checks compute results
and templates only lay them out (coverage.py's split: data first, then templates that present it).

A view is a function of a check's section, registered for the check's name (`@view("corruption")`); a
check without one (a plugin's) gets no extra values, and its template reads its section directly. A
template reads its view as `s.view`.
"""

from __future__ import annotations

from typing import Callable

from .render import _pct

VIEWS: dict[str, Callable[[dict], dict]] = {}
EMPTY = {"kpis": []}


def view(name: str):
    """Register the decorated function as the view of check `name`."""
    def register(fn):
        VIEWS[name] = fn
        return fn
    return register


def view_of(name: str, section: dict, report: dict | None = None) -> dict:
    """The presentation values of one check's section ({"kpis": [...]} at least); none for a failed check.
    A check without a view keeps the KPIs it put in its report data itself (plugins written for 0.6)."""
    if section.get("failed"):
        return dict(EMPTY)
    if name not in VIEWS:
        return {"kpis": list((report or {}).get("kpis", []))}
    return {**EMPTY, **VIEWS[name](section)}


def _kpi(value: str, label: str) -> dict:
    return {"value": value, "label": label}


def _points(rows, x: str, y: str) -> list[tuple]:
    return [(r[x], r[y], *(r.get(f"{y}_ci") or (None, None))) for r in rows]


@view("adversarial")
def adversarial(a: dict) -> dict:
    """Per norm: the chart's series (worst case, FGSM alone), the middle budget the per-class table shows,
    and a KPI of the worst-case robust accuracy at the largest budget."""
    results = a.get("results") or []
    norms = list(dict.fromkeys(r["norm"] for r in results))
    query_only = a.get("threat_model") == "query_only"
    names = {"worst_case": "Square (upper bound)" if query_only else "worst case", "fgsm": "FGSM alone"}
    series, middle, kpis = {}, {}, []
    for norm in norms:
        series[norm] = [{"name": names[attack], "points": _points(pts, "eps", "robust_accuracy")}
                        for attack in ("worst_case", "fgsm")
                        if (pts := [r for r in results if r["norm"] == norm and r["attack"] == attack])]
        grid = [r for r in results if r["norm"] == norm and r["attack"] == "worst_case"]
        middle[norm] = grid[(len(grid) - 1) // 2]["eps"]
        top = max(grid, key=lambda r: r["eps"])
        bound = ", at most (query-only: Square)" if query_only else ""
        kpis.append(_kpi(_pct(top["robust_accuracy"]), f"robust accuracy, {norm} eps {top['eps_label']}{bound}"))
    return {"norms": norms, "series": series, "middle_eps": middle, "kpis": kpis}


@view("corruption")
def corruption(c: dict) -> dict:
    """The chart's series (severity 0 is clean), per metadata group the mean accuracy over severities with
    the worst severity's cell, and a KPI of the worst corruption's mean accuracy."""
    results = c.get("results") or []
    series = [{"name": name, "points": [(0, c["clean_accuracy"], None, None)] +
               _points([r for r in results if r["corruption"] == name], "severity", "accuracy")}
              for name in c.get("corruptions") or []]
    by_group: dict[tuple, dict[str, list]] = {}
    for cell in c.get("per_group") or []:
        by_group.setdefault((cell["attribute"], cell["value"]), {}).setdefault(cell["corruption"], []).append(cell)
    groups = [{"attribute": attr, "value": value,
               "cells": {name: {"mean": sum(x["accuracy"] for x in cells) / len(cells),
                                "worst": max(cells, key=lambda x: x["severity"])} for name, cells in by.items()}}
              for (attr, value), by in sorted(by_group.items(), key=lambda kv: (str(kv[0][0]).lower(), str(kv[0][0]),
                                                                            str(kv[0][1]).lower(), str(kv[0][1])))]
    mean = c.get("mean") or {}
    kpis = []
    if mean:
        worst = min(mean, key=lambda name: mean[name])
        kpis.append(_kpi(_pct(mean[worst]), f"accuracy under {worst.replace('_', ' ')} (mean over severities)"))
    return {"series": series, "groups": groups, "kpis": kpis}


@view("subgroups")
def subgroups(b: dict) -> dict:
    significant = [a for a, e in (b.get("attributes") or {}).items() if e.get("significant")]
    return {"kpis": [_kpi(str(len(significant)), "attribute(s) with a significant accuracy gap")]}


@view("shortcuts")
def shortcuts(h: dict) -> dict:
    artifacts = h.get("artifacts") or {}
    if not artifacts:
        return {"kpis": []}
    n = sum(a["verdict"] == "shortcut" for a in artifacts.values())
    return {"kpis": [_kpi(str(n), f"of {len(artifacts)} annotated artifact(s) judged a shortcut")]}


@view("multilabel")
def multilabel(m: dict) -> dict:
    """Headline numbers of a multi-label audit and each label's panel anchor."""
    from ..multilabel.audit import anchor
    macro = (m.get("macro") or {}).get("auroc")
    return {"kpis": [_kpi("n/a" if macro is None else f"{macro:.3f}", "macro AUROC"),
                     _kpi(_pct(m["subset_accuracy"]), "subset accuracy (every label right)")],
            "anchors": {name: anchor(name) for name in m["labels"]}}

"""Every gateable number of a summary under one flat name, for regression rules and `cnnaudit diff`.

Names: `clean.accuracy`, `clean.ece`, `adversarial.<attack>.<norm>.<eps>` (robust accuracy; eps as in the
report, e.g. 8/255), `corruption.accuracy.<corruption>` (mean over severities),
`corruption.relative_drop.<corruption>` and `.mean`, `subgroups.gap.<attribute>`,
`shortcuts.flip_rate.<artifact>`.
"""

from __future__ import annotations

LOWER_IS_BETTER = ("clean.ece", "corruption.relative_drop.", "subgroups.gap.", "shortcuts.flip_rate.")


def higher_is_better(name: str) -> bool:
    return not name.startswith(LOWER_IS_BETTER)


def catalog(summary: dict) -> dict[str, float]:
    out = {}
    clean = summary.get("clean") or {}
    for key in ("accuracy", "ece"):
        if clean.get(key) is not None:
            out[f"clean.{key}"] = clean[key]
    for r in (summary.get("adversarial") or {}).get("results", []):
        if r.get("robust_accuracy") is not None:
            out[f"adversarial.{r['attack']}.{r['norm']}.{r['eps_label']}"] = r["robust_accuracy"]
    corruption = summary.get("corruption") or {}
    for name, value in (corruption.get("mean") or {}).items():
        out[f"corruption.accuracy.{name}"] = value
    drops = {k: v for k, v in (corruption.get("relative_drop") or {}).items() if v is not None}
    for name, value in drops.items():
        out[f"corruption.relative_drop.{name}"] = value
    if drops:
        out["corruption.relative_drop.mean"] = round(sum(drops.values()) / len(drops), 6)
    for attr, e in ((summary.get("subgroups") or {}).get("attributes") or {}).items():
        if e.get("gap") is not None:
            out[f"subgroups.gap.{attr}"] = e["gap"]
    for name, a in ((summary.get("shortcuts") or {}).get("artifacts") or {}).items():
        if a.get("flip_rate") is not None:
            out[f"shortcuts.flip_rate.{name}"] = a["flip_rate"]
    return out


def diff(old: dict, new: dict) -> list[dict]:
    """Per metric present in either: old, new, delta (new - old) and whether it got better or worse."""
    a, b = catalog(old), catalog(new)
    rows = []
    for name in sorted(set(a) | set(b)):
        o, n = a.get(name), b.get(name)
        delta = None if o is None or n is None else round(n - o, 6)
        change = "n/a" if delta is None else ("same" if abs(delta) < 1e-9 else
                                               ("better" if (delta > 0) == higher_is_better(name) else "worse"))
        rows.append({"metric": name, "old": o, "new": n, "delta": delta, "change": change})
    return rows

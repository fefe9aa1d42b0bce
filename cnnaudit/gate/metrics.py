"""Every gateable number of a summary under one flat name, for regression rules and `cnnaudit diff`.

Names (a multi-label audit's per-label ones prefixed `<label>/`): `clean.accuracy`, `clean.ece`, `adversarial.<attack>.<norm>.<eps>` (robust accuracy; eps as in the
report, e.g. 8/255), `corruption.accuracy.<corruption>` (mean over severities),
`corruption.relative_drop.<corruption>` and `.mean`, `subgroups.gap.<attribute>`,
`shortcuts.flip_rate.<artifact>`. Each check declares its own (Check.metrics, Check.lower_is_better).
"""

from __future__ import annotations

def higher_is_better(name: str) -> bool:
    from ..checks import registry
    lower = tuple(p for c in registry().values() for p in c.lower_is_better)
    return not name.startswith(lower)


def catalog(summary: dict) -> dict[str, float]:
    """Every registered check's metrics (Check.metrics) from its section of the summary."""
    from ..checks import registry
    out = {}
    for name, check in registry().items():
        section = summary.get(name) or {}
        if not section.get("failed"):
            out.update(check.metrics(section))
    for label, sections in (summary.get("per_label") or {}).items():  # a multi-label audit: `<label>/<metric>`
        for name, check in registry().items():
            section = sections.get(name) or {}
            if not section.get("failed"):
                out.update({f"{label}/{k}": v for k, v in check.metrics(section).items()})
    return out


def higher_is_better_name(name: str) -> bool:
    return higher_is_better(name.split("/", 1)[1] if "/" in name else name)


def diff(old: dict, new: dict) -> list[dict]:
    """Per metric present in either: old, new, delta (new - old) and whether it got better or worse."""
    a, b = catalog(old), catalog(new)
    rows = []
    for name in sorted(set(a) | set(b)):
        o, n = a.get(name), b.get(name)
        delta = None if o is None or n is None else round(n - o, 6)
        change = "n/a" if delta is None else ("same" if abs(delta) < 1e-9 else
                                               ("better" if (delta > 0) == higher_is_better_name(name) else "worse"))
        rows.append({"metric": name, "old": o, "new": n, "delta": delta, "change": change})
    return rows


def diff_findings(old: dict, new: dict) -> dict:
    """Findings that appear in NEW but not OLD (`new`) and the reverse (`resolved`), matched by id (check,
    kind and subject, or what distinguishes a discovered slice: a finding whose numbers moved is the same
    finding). Summaries before 0.4 had sentences, not records: they compare as having no findings."""
    from ..compat import upgrade

    def keyed(summary):
        return {f["id"]: f for f in upgrade(summary).get("findings") or []}
    a, b = keyed(old), keyed(new)
    return {"new": [f for k, f in b.items() if k not in a], "resolved": [f for k, f in a.items() if k not in b]}

"""Findings: what a reviewer must look at, as structured, ranked records.

Every check contributes through `CheckResult.findings` (a plugin's too); the pipeline ranks them into
`summary.findings`. A finding is {severity, check, kind, subject, title, detail, effect, ci, p_adjusted,
evidence, sample_ids}:

- severity: `fail` (a failure the data supports, large enough to act on), `warn` (supported but smaller,
  or large but not established), `info` (context);
- effect: the size, as a share in [0, 1] (accuracy points lost, share of a class confused, flip rate);
  `ci` its 95% interval where there is one; `p_adjusted` the multiplicity-adjusted p-value of the test
  behind it (Holm within its family), where there is one;
- evidence: the report anchor of the section that shows it; sample_ids: examples for the thumbnail strip.
- members: every image the finding is about (its failing images: a weak class's misclassified images, a
  corruption's images right on clean and wrong at its worst severity, ...), or None where it has no image set
  (notes, data representation). Internal: root causes are grouped by it (rootcause.py); summary.json holds only
  its size (`n_images`), so a 100k-image audit's summary stays small.
- id: stable across seeds, releases and retrained models (`finding_id`): `check/kind/subject`, made from what
  the finding is about, never from its numbers. `key` replaces the subject where the subject shown is not
  stable (a discovered slice is "slice 1" in the report, `discovered:scanner=C` in its id).

Ranking (`rank`): severity first (fail, warn, info); within a severity, findings backed by a test or an
interval that excludes no effect (p_adjusted < 0.05, or a ci whose lower end is above 0) before those
without; then by effect, largest first; ties by check and subject, so the order is deterministic.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from .stats import ALPHA  # one significance level for every test

SEVERITIES = ("fail", "warn", "info")
# kinds any check (or the pipeline) may report; each check declares its own (Check.finding_kinds)
GENERIC_KINDS = ("data", "check_failed", "note", "undecided")  # undecided: a gate rule a --budget sample cannot decide


def kinds() -> tuple[str, ...]:
    """Every finding kind: the generic ones and those each registered check declares, in registry order."""
    from .checks import registry
    return tuple(dict.fromkeys([*GENERIC_KINDS, *(k for c in registry().values() for k in c.finding_kinds)]))


@dataclass
class Finding:
    severity: str
    check: str
    kind: str
    subject: str
    title: str
    detail: str = ""
    effect: float | None = None
    ci: list[float] | None = None
    p_adjusted: float | None = None
    evidence: str = ""
    sample_ids: list[int] = field(default_factory=list)
    label: str | None = None  # a multi-label audit: the label whose decision it is about (absent otherwise)
    key: str | None = None  # the id's subject where `subject` is not stable (finding_id); not written
    members: list[int] | None = None  # every image it is about (None: no image set); grouped on, not written

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"finding severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")
        self.evidence = self.evidence or f"#{self.check}"
        self.effect = None if self.effect is None else round(float(self.effect), 6)
        self.ci = None if self.ci is None else [round(float(v), 6) for v in self.ci]
        self.p_adjusted = None if self.p_adjusted is None else float(self.p_adjusted)
        self.sample_ids = [int(s) for s in self.sample_ids]
        self.members = None if self.members is None else sorted({int(s) for s in self.members})

    def as_dict(self) -> dict:
        out = asdict(self)
        if out["label"] is None:
            out.pop("label")
        out["id"] = finding_id(out)
        out.pop("key")
        if out["members"] is None:
            out.pop("members")
        return out


def _slug(text: str) -> str:
    """A subject as an id segment: "scanner = C" -> "scanner=C", "9→8" -> "9->8", spaces -> "-"."""
    text = re.sub(r"\s*=\s*", "=", str(text).strip()).replace("→", "->").replace("/", "|")
    return re.sub(r"\s+", "-", text)


def finding_id(f: dict) -> str:
    """`check/kind/subject` (`subject@label` in a multi-label audit). Built from what the finding is about, so
    the same flaw keeps its id across seeds, releases and retraining; a waiver names it (gate/waivers.py)."""
    subject = f.get("key") or f["subject"]
    label = f.get("label")
    if label is not None and subject.startswith(f"{label}: "):  # multi-label subjects lead with their label
        subject = subject[len(label) + 2:]
    return f"{f['check']}/{f['kind']}/{_slug(subject)}" + (f"@{_slug(label)}" if label is not None else "")


def id_prefix(check: str, kind: str, subject: str) -> str:
    """The start of the ids of the findings of `kind` about `subject` (`subgroups/subgroup_gap/scanner` for every
    group of scanner): what a rule kind's failure is about (RuleKind.about), matched at a segment boundary."""
    return f"{check}/{kind}/{_slug(subject)}"


def unique_ids(findings: list[dict]) -> list[dict]:
    """Two findings of one audit with the same id (a plugin reusing a subject) get `~2`, `~3` in ranked order."""
    seen: dict[str, int] = {}
    for f in findings:
        base = f.get("id") or finding_id(f)
        seen[base] = seen.get(base, 0) + 1
        f["id"] = base if seen[base] == 1 else f"{base}~{seen[base]}"
    return findings


def supported(f: dict) -> bool:
    """Backed by a test (p_adjusted < ALPHA) or by an interval that excludes no effect."""
    if f.get("p_adjusted") is not None:
        return f["p_adjusted"] < ALPHA
    return bool(f.get("ci")) and f["ci"][0] > 0


def coerce(item, check: str) -> dict:
    """A check's finding as a dict: a Finding, a dict of its fields, or (from a plugin written for 0.3) a
    sentence, which becomes a `note` to review."""
    if isinstance(item, Finding):
        return item.as_dict()
    if isinstance(item, dict):
        return Finding(**{"check": check, **{k: v for k, v in item.items() if k != "id"}}).as_dict()
    return Finding("warn", check, "note", check, str(item)).as_dict()


def rank(findings: list[dict]) -> list[dict]:
    def key(f):
        effect = f["effect"] if f["effect"] is not None else -1.0
        return (SEVERITIES.index(f["severity"]), not supported(f), -effect, f["check"], f["kind"], f["subject"])
    return sorted(findings, key=key)


def fmt_p(p: float) -> str:
    """"p = 0.0032" for a sentence; a p-value that underflowed to 0 is said as what it is."""
    return f"p = {p:.2g}" if p > 0 else "p < 1e-300"


def sentence(f: dict) -> str:
    """The finding as the one sentence summary.json's findings held before 0.4 (`finding_sentences`)."""
    return f["title"] + (f": {f['detail']}" if f["detail"] else "")

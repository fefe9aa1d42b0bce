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

Ranking (`rank`): severity first (fail, warn, info); within a severity, findings backed by a test or an
interval that excludes no effect (p_adjusted < 0.05, or a ci whose lower end is above 0) before those
without; then by effect, largest first; ties by check and subject, so the order is deterministic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .stats import ALPHA  # one significance level for every test

SEVERITIES = ("fail", "warn", "info")
# kinds any check (or the pipeline) may report; each check declares its own (Check.finding_kinds)
GENERIC_KINDS = ("data", "check_failed", "note")


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

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"finding severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")
        self.evidence = self.evidence or f"#{self.check}"
        self.effect = None if self.effect is None else round(float(self.effect), 6)
        self.ci = None if self.ci is None else [round(float(v), 6) for v in self.ci]
        self.p_adjusted = None if self.p_adjusted is None else float(self.p_adjusted)
        self.sample_ids = [int(s) for s in self.sample_ids]

    def as_dict(self) -> dict:
        out = asdict(self)
        if out["label"] is None:
            out.pop("label")
        return out


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
        return Finding(**{"check": check, **item}).as_dict()
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

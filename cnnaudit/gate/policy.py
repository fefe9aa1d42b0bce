"""Read and validate a gate policy (TOML). Every mistake is an AuditError naming the rule and key:
a typo must never pass silently.

    [[rule]]
    name = "clean accuracy"        # optional; default: the kind
    kind = "min_clean_accuracy"
    threshold = 0.95
    severity = "fail"              # or "warn" (reported, never fails the build); default fail
    label = "effusion"             # multi-label audits: judge this label only (default: every label)

The kinds are declared by the checks whose sections they judge (Check.rule_kinds) and by the gate itself
(max_regression, gate/regression.py; max_findings, gate/findings_rule.py). A policy may also hold
[[waiver]] tables, a reviewer's acceptance of findings (gate/waivers.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import AuditError
from ..rules import EVIDENCE_MODES, Rule, RuleKind

COMMON = {"name": (str,), "kind": (str,), "severity": (str,)}
# any rule may say what happens when a --budget sample cannot decide it (gate/judge.py: undecided); kept in params
INSUFFICIENT = {"on_insufficient": (str,)}
# any rule of a multi-label audit may name the label it judges (default: every label must pass); kept in params
LABEL = {"label": (str,)}


def rule_kinds() -> dict[str, tuple[RuleKind, str | None]]:
    """Every rule kind a policy may use -> (kind, the check whose section it judges; None: the gate's own)."""
    from ..checks import registry
    from .findings_rule import MAX_FINDINGS
    from .regression import MAX_REGRESSION
    out = {kind.name: (kind, name) for name, check in registry().items() for kind in check.rule_kinds}
    for own in (MAX_REGRESSION, MAX_FINDINGS):
        out[own.name] = (own, None)
    return out


class Policy(list):
    """A policy's rules (a list of Rule, as load_policy returned before 0.9.0), with its waivers beside them
    (`.waivers`, gate/waivers.py), which judge() honours."""

    def __init__(self, rules=(), waivers=()):
        super().__init__(rules)
        self.waivers = list(waivers)


def load_policy(path: str | Path, *, need_rules: bool = True) -> Policy:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuditError(f"policy file {str(path)!r} does not exist; give the path to a TOML policy.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AuditError(f"policy file {str(path)!r} is not valid TOML ({exc}).") from None
    return parse_policy(data, str(path), need_rules=need_rules)


def parse_policy(data: dict, where: str = "policy", *, need_rules: bool = True) -> Policy:
    """`need_rules`: a gate needs at least one rule (waivers alone gate nothing); `cnnaudit review` reads a file
    of waivers alone."""
    from .waivers import parse_waivers
    extra = [k for k in data if k not in ("rule", "waiver")]
    if extra:
        raise AuditError(f"{where}: unknown top-level key {extra[0]!r}; a policy is a list of [[rule]] (and "
                         "[[waiver]]) tables.")
    waivers = parse_waivers(data["waiver"], where) if "waiver" in data else []
    rules = data.get("rule", [])
    if not isinstance(rules, list) or (need_rules and not rules):
        raise AuditError(f"{where}: no [[rule]] tables; add at least one rule" + (
            " (waivers accept findings a rule would fail on, such as max_findings; alone they gate nothing)."
            if waivers else "."))
    out, names, kinds = [], set(), rule_kinds()
    for i, raw in enumerate(rules, 1):
        label = f"{where}: rule {i}" + (f" ({raw.get('name')!r})" if isinstance(raw, dict) and raw.get("name") else "")
        if not isinstance(raw, dict):
            raise AuditError(f"{label} is not a table.")
        kind = raw.get("kind")
        if kind not in kinds:
            raise AuditError(f"{label} has kind {kind!r}; choose from {', '.join(kinds)}.")
        spec = kinds[kind][0]
        required, allowed = spec.required, {**COMMON, **LABEL, **INSUFFICIENT, **spec.required, **spec.optional}
        for key, value in raw.items():
            if key not in allowed:
                raise AuditError(f"{label} has unknown key {key!r}; {kind} takes {', '.join(sorted(allowed))}.")
            types = allowed[key]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                want = " or ".join(t.__name__ for t in types)
                raise AuditError(f"{label}: {key} = {value!r} should be a {want}.")
        missing = [k for k in required if k not in raw]
        if missing:
            raise AuditError(f"{label} ({kind}) is missing {missing[0]!r}.")
        severity = raw.get("severity", "fail")
        if severity not in ("fail", "warn"):
            raise AuditError(f"{label}: severity = {severity!r} should be 'fail' or 'warn'.")
        key = spec.evidence_key
        if key in raw and raw[key] not in EVIDENCE_MODES:
            raise AuditError(f"{label}: {key} = {raw[key]!r} should be one of {', '.join(EVIDENCE_MODES)}.")
        if raw.get("on_insufficient", "fail") not in EVIDENCE_MODES:
            raise AuditError(f"{label}: on_insufficient = {raw['on_insufficient']!r} should be one of "
                             f"{', '.join(EVIDENCE_MODES)}.")
        if "threshold" in raw and spec.share_threshold and not 0 <= raw["threshold"] <= 1:
            raise AuditError(f"{label}: threshold = {raw['threshold']!r} should be a share between 0 and 1.")
        name = raw.get("name") or f"{kind} {i}"
        if name in names:
            raise AuditError(f"{label}: the name {name!r} is used twice; rule names must be unique.")
        names.add(name)
        params = {k: v for k, v in raw.items() if k not in COMMON}
        rule = Rule(name=name, kind=kind, severity=severity, params=params, evidence_key=key)
        if spec.validate is not None:
            spec.validate(rule)
        out.append(rule)
    return Policy(out, waivers)


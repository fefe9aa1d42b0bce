"""Read and validate a gate policy (TOML). Every mistake is an AuditError naming the rule and key:
a typo must never pass silently.

    [[rule]]
    name = "clean accuracy"        # optional; default: the kind
    kind = "min_clean_accuracy"
    threshold = 0.95
    severity = "fail"              # or "warn" (reported, never fails the build); default fail
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import AuditError

NUMBER = (int, float)
# kind -> (required keys, optional keys), each key -> accepted types
KINDS = {
    "min_clean_accuracy": ({"threshold": NUMBER}, {}),
    "min_robust_accuracy": ({"threshold": NUMBER, "norm": (str,), "eps": (str, int, float)},
                            {"attack": (str,), "on_masking": (str,)}),
    "max_corruption_drop": ({"threshold": NUMBER}, {"corruption": (str,)}),
    "max_subgroup_gap": ({"threshold": NUMBER}, {"attribute": (str,), "only_significant": (bool,),
                                                 "on_insufficient": (str,)}),
    "no_shortcut": ({}, {"artifact": (str,), "on_inconclusive": (str,)}),
    "max_regression": ({"threshold": NUMBER, "metric": (str,)}, {"on_missing_baseline": (str,)}),
}
# What a rule does when the audit has no evidence either way (gradient masking suspected, no group large
# enough to compare, a shortcut verdict of inconclusive, no baseline): fail unless the policy relaxes it.
EVIDENCE_KEYS = {"min_robust_accuracy": "on_masking", "max_subgroup_gap": "on_insufficient",
                 "no_shortcut": "on_inconclusive", "max_regression": "on_missing_baseline"}
EVIDENCE_MODES = ("fail", "warn", "pass")
COMMON = {"name": (str,), "kind": (str,), "severity": (str,)}


@dataclass
class Rule:
    name: str
    kind: str
    severity: str = "fail"
    params: dict = field(default_factory=dict)


def load_policy(path: str | Path) -> list[Rule]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuditError(f"policy file {str(path)!r} does not exist; give the path to a TOML policy.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AuditError(f"policy file {str(path)!r} is not valid TOML ({exc}).") from None
    return parse_policy(data, str(path))


def parse_policy(data: dict, where: str = "policy") -> list[Rule]:
    extra = [k for k in data if k != "rule"]
    if extra:
        raise AuditError(f"{where}: unknown top-level key {extra[0]!r}; a policy is a list of [[rule]] tables.")
    rules = data.get("rule")
    if not isinstance(rules, list) or not rules:
        raise AuditError(f"{where}: no [[rule]] tables; add at least one rule.")
    out, names = [], set()
    for i, raw in enumerate(rules, 1):
        label = f"{where}: rule {i}" + (f" ({raw.get('name')!r})" if isinstance(raw, dict) and raw.get("name") else "")
        if not isinstance(raw, dict):
            raise AuditError(f"{label} is not a table.")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise AuditError(f"{label} has kind {kind!r}; choose from {', '.join(KINDS)}.")
        required, optional = KINDS[kind]
        allowed = {**COMMON, **required, **optional}
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
        key = EVIDENCE_KEYS.get(kind)
        if key in raw and raw[key] not in EVIDENCE_MODES:
            raise AuditError(f"{label}: {key} = {raw[key]!r} should be one of {', '.join(EVIDENCE_MODES)}.")
        if "threshold" in raw and kind != "max_regression" and not 0 <= raw["threshold"] <= 1:
            raise AuditError(f"{label}: threshold = {raw['threshold']!r} should be a share between 0 and 1.")
        name = raw.get("name") or f"{kind} {i}"
        if name in names:
            raise AuditError(f"{label}: the name {name!r} is used twice; rule names must be unique.")
        names.add(name)
        params = {k: v for k, v in raw.items() if k not in COMMON}
        out.append(Rule(name=name, kind=kind, severity=severity, params=params))
    return out


def parse_eps(value) -> float:
    from ..budgets import parse_budget
    try:
        return parse_budget(value)
    except ValueError:
        raise AuditError(f"eps {value!r} in the policy is not a number or fraction like 8/255.") from None

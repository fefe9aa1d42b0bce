"""Check a policy against the audit about to run, before any model work: a rule about a check that
--checks leaves out, a budget outside the eps grid, a corruption not run, an attribute or artifact the
data does not have, or a regression rule without a baseline is an AuditError (exit 2) in seconds,
not after the whole audit."""

from __future__ import annotations

from ..errors import AuditError
from .judge import SECTION_OF_KIND, evidence_mode
from .policy import Rule, parse_eps

FLAGS = {"adversarial": "--checks adversarial", "corruption": "--checks corruption",
         "subgroups": "--checks subgroups", "shortcuts": "--checks shortcuts --artifact NAME"}


def check_plan(rules: list[Rule], config, baseline: dict | None, attributes: list[str]) -> None:
    from ..checks import available, registry
    planned = available() if config.checks is None else list(config.checks)
    for rule in rules:
        p, section = rule.params, SECTION_OF_KIND.get(rule.kind)
        if section and section not in planned:
            raise AuditError(f"rule {rule.name!r} needs the {section} check, which this audit does not run; "
                             f"add it ({FLAGS[section]}) or remove the rule.")
        opts = registry()[section].options(config) if section else None
        if rule.kind == "min_robust_accuracy":
            grid, eps = opts.grid(), parse_eps(p["eps"])
            if p["norm"] not in grid or not any(abs(e - eps) <= 1e-9 * max(1.0, eps) for e in grid[p["norm"]]):
                have = "; ".join(f"{n}: {', '.join(f'{e:.6g}' for e in es)}" for n, es in grid.items())
                raise AuditError(f"rule {rule.name!r} asks for robust accuracy at {p['norm']} {p['eps']}, which is "
                                 f"not in the planned budgets ({have}); add it with --eps-{p['norm']} or fix the rule.")
            if p.get("attack", "worst_case") not in ("worst_case", "fgsm"):
                raise AuditError(f"rule {rule.name!r}: attack = {p['attack']!r} should be 'worst_case' or 'fgsm'.")
        elif rule.kind == "max_corruption_drop" and p.get("corruption", "mean") != "mean":
            if p["corruption"] not in opts.corruptions:
                raise AuditError(f"rule {rule.name!r} names corruption {p['corruption']!r}, which the audit will "
                                 f"not run ({', '.join(opts.corruptions)}); add it with --corruptions or fix the rule.")
        elif rule.kind == "max_subgroup_gap" and p.get("attribute") is not None:
            if p["attribute"].split("*")[0] not in attributes:
                raise AuditError(f"rule {rule.name!r} names attribute {p['attribute']!r}, which the data does not "
                                 f"have (metadata columns: {', '.join(attributes) or 'none'}); fix the rule.")
        elif rule.kind == "no_shortcut":
            if not opts.artifacts:
                raise AuditError(f"rule {rule.name!r} needs at least one annotated artifact; add --artifact NAME "
                                 "(a 0/1 metadata column with NAME_box or NAME_mask) or remove the rule.")
            if p.get("artifact") is not None and p["artifact"] not in opts.artifacts:
                raise AuditError(f"rule {rule.name!r} names artifact {p['artifact']!r}, which the audit will not test "
                                 f"({', '.join(opts.artifacts)}); add --artifact {p['artifact']} or fix the rule.")
        elif rule.kind == "max_regression" and baseline is None and evidence_mode(rule) == "fail":
            raise AuditError(f"rule {rule.name!r} compares against a baseline; give --baseline OLD/summary.json, or "
                             "set on_missing_baseline = \"warn\" (or \"pass\") in the rule for a first release.")

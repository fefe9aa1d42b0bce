"""Check a policy against the audit about to run, before any model work: a rule about a check that
--checks leaves out, a budget outside the eps grid, a corruption not run, an attribute or artifact the
data does not have, or a regression rule without a baseline is an AuditError (exit 2) in seconds,
not after the whole audit. Each kind's own plan check lives with its check (RuleKind.plan)."""

from __future__ import annotations

from ..errors import AuditError
from .policy import rule_kinds
from .regression import NO_BASELINE, NO_COMPARISON
from ..rules import Rule, evidence_mode


def check_plan(rules: list[Rule], config, baseline: dict | None, attributes: list[str], *,
               compare: bool = False, labels: list[str] | None = None) -> None:
    """`compare`: the audit is one side of `cnnaudit compare`, so there will be a comparison for paired
    rules and, without --baseline, the baseline model's own audit for unpaired max_regression rules.
    `labels`: a multi-label audit's labels (None: the data is not multi-label)."""
    from ..checks import available, registry
    planned = available() if config.checks is None else list(config.checks)
    kinds = rule_kinds()
    for rule in rules:
        kind, check = kinds[rule.kind]
        label = rule.params.get("label")
        if label is not None and labels is None:
            raise AuditError(f"rule {rule.name!r} names label {label!r}, but the data is not multi-label; remove the "
                             "label key.")
        if label is not None and label not in labels:
            raise AuditError(f"rule {rule.name!r} names label {label!r}, which the data does not have (labels: "
                             f"{', '.join(labels)}); fix the rule.")
        attacked = getattr(config, "attack_labels", None)
        if check == "adversarial" and labels is not None and attacked and label is not None and label not in attacked:
            raise AuditError(f"rule {rule.name!r} judges the attacks on label {label!r}, which --labels leaves out "
                             f"({', '.join(attacked)}); add it to --labels or remove the rule.")
        if check == "multilabel" and labels is None:
            raise AuditError(f"rule {rule.name!r} ({rule.kind}) judges a multi-label audit, but the data is not "
                             "multi-label (no 'labels' column, --label-columns or --task multilabel).")
        if check is None:
            if rule.kind == "max_regression" and rule.params.get("paired"):
                if not compare:
                    raise AuditError(NO_COMPARISON.format(name=rule.name))
            elif rule.kind == "max_regression" and baseline is None and not compare and evidence_mode(rule) == "fail":
                raise AuditError(NO_BASELINE.format(name=rule.name))
            elif rule.kind == "max_regression" and baseline is not None:
                _baseline_has(rule, baseline)
            continue
        if check not in ("clean", "multilabel") and check not in planned:
            raise AuditError(f"rule {rule.name!r} needs the {check} check, which this audit does not run; "
                             f"add it ({kind.needs or '--checks ' + check}) or remove the rule.")
        if kind.plan is not None:
            kind.plan(rule, registry()[check].options_from(config), attributes)
    for waiver in getattr(rules, "waivers", []):
        _waiver_plan(waiver, planned)


def _waiver_plan(waiver, planned: list[str]) -> None:
    """A waiver's until_metric must be a number this audit computes (else it could never be judged)."""
    from .waivers import parse_condition
    if waiver.until_metric is None:
        return
    name = parse_condition(waiver.until_metric, waiver.label)[0]
    check = name.split("/", 1)[-1].split(".")[0]
    if name != "effect" and check not in ("clean", *planned):
        raise AuditError(f"{waiver.label}: until_metric names {name!r}, but this audit does not run the {check} "
                         f"check; add it (--checks) or change the waiver's until_metric.")


def _baseline_has(rule: Rule, baseline: dict) -> None:
    """An unpaired max_regression rule's metric must be one the baseline has: known before the audit."""
    from .metrics import catalog
    metric, have = rule.params["metric"], catalog(baseline)
    if baseline.get("task") == "multilabel":  # a label's own metrics are judged per label, unprefixed
        from .judge import label_summary
        for name in baseline.get("per_label") or {}:
            have.update(catalog(label_summary(baseline, name)))
    if metric not in have:
        near = [m for m in have if m.split(".")[0] == metric.split(".")[0]][:6] or list(have)[:6]
        raise AuditError(f"rule {rule.name!r} names metric {metric!r}, which the baseline summary does not have "
                         f"(it has {', '.join(near)}, ...); see `cnnaudit diff OLD NEW` for the metric names.")

"""The gate's own rule kind, max_regression: any gateable metric (gate/metrics.py) against the same metric
in the baseline summary.json of the last release."""

from __future__ import annotations

from ..errors import AuditError
from .metrics import catalog, higher_is_better
from .rules import NUMBER, RuleKind, evidence_mode, without_evidence, result

NO_BASELINE = ("rule {name!r} compares against a baseline; give --baseline OLD/summary.json, or set "
               "on_missing_baseline = \"warn\" (or \"pass\") in the rule for a first release.")


def judge_regression(rule, summary: dict, baseline: dict | None) -> dict:
    p, m = rule.params, rule.params["metric"]
    if baseline is None:
        if evidence_mode(rule) == "fail":
            raise AuditError(NO_BASELINE.format(name=rule.name))
        return without_evidence(rule, m, None, p["threshold"], "no baseline to compare with")
    new, old = catalog(summary), catalog(baseline)
    if m not in new or m not in old:
        where = "this audit" if m not in new else "the baseline"
        raise AuditError(f"rule {rule.name!r} names metric {m!r}, which {where} does not have; see "
                         "`cnnaudit diff OLD NEW` for the metric names.")
    regression = round((old[m] - new[m]) if higher_is_better(m) else (new[m] - old[m]), 6)
    return result(rule, m, regression, p["threshold"], regression <= p["threshold"],
                  f"{m}: {old[m]:.4f} → {new[m]:.4f}, regression {regression:+.4f} (maximum {p['threshold']})")


MAX_REGRESSION = RuleKind("max_regression", judge_regression, required={"threshold": NUMBER, "metric": (str,)},
                          optional={"on_missing_baseline": (str,)}, evidence_key="on_missing_baseline",
                          share_threshold=False)

"""Experiment-tracker export: `--mlflow` logs an audit (or a comparison) to MLflow, the optional extra
'mlflow' (Apache-2.0). Where it logs is MLflow's own configuration: MLFLOW_TRACKING_URI (a server, or a
local `file:` store), MLFLOW_EXPERIMENT_NAME, and MLFLOW_RUN_ID to add to an existing run; from Python,
an active run is used as is.

Logged: the gateable metrics under their `cnnaudit diff` names (gate/metrics.py), the number of findings
per severity, the gate's result, for a comparison its paired deltas and counts; the model's hash, seed
and image count as parameters; summary.json, report.html and, when written, the model card and
comparison.json as artifacts. It reads the written results; it recomputes nothing.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from pathlib import Path

from .errors import AuditError, first_line

NEEDS = "--mlflow needs MLflow; install it with pip install 'cnnaudit[mlflow]' (or mlflow), or leave out --mlflow."


def require_mlflow():
    """MLflow, or an AuditError naming the install (checked before the audit runs)."""
    try:
        import mlflow
    except ImportError:
        raise AuditError(NEEDS) from None
    return mlflow


def metric_name(name: str) -> str:
    """MLflow accepts letters, digits, _ - . / and spaces in a metric name: anything else (the '=' of a
    group's condition) becomes _."""
    return re.sub(r"[^\w.\- /]", "_", name)


def metrics_of(summary: dict, comparison: dict | None = None) -> dict[str, float]:
    from .findings import SEVERITIES
    from .gate.metrics import catalog
    out = {metric_name(k): float(v) for k, v in catalog(summary).items() if v is not None}
    findings = summary.get("findings") or []
    for level in SEVERITIES:
        out[f"findings.{level}"] = float(sum(f["severity"] == level for f in findings))
    gate = summary.get("gate")
    if gate:
        out["gate.passed"] = float(bool(gate["passed"]))
        out["gate.n_failed"] = float(gate["n_failed"])
    if comparison:
        out["paired.n_significant"] = float(comparison["n_significant"])
        out["paired.n_regressions"] = float(len(comparison["regressions"]))
        out["paired.n_improvements"] = float(len(comparison["improvements"]))
        for r in comparison["conditions"]:
            if r.get("delta") is not None:
                out[metric_name(f"paired.delta.{r['check']}.{r['condition']}")] = float(r["delta"])
    return out


def log_to_mlflow(summary: dict, paths: dict, *, comparison: dict | None = None) -> str:
    """Log one audit (`summary`, its written `paths`) to MLflow; returns the run id."""
    mlflow = require_mlflow()
    try:
        return _log(mlflow, summary, paths, comparison)
    except mlflow.exceptions.MlflowException as exc:  # a store it cannot use: say which, not a traceback
        raise AuditError(f"--mlflow could not log to {mlflow.get_tracking_uri()!r} ({first_line(exc)}); the audit's "
                         "outputs are written; fix MLFLOW_TRACKING_URI or leave out --mlflow.") from None


def _log(mlflow, summary: dict, paths: dict, comparison: dict | None) -> str:
    model = summary.get("model") or {}
    name = f"cnnaudit {Path(str(model.get('path') or 'model')).name}"
    active = mlflow.active_run()
    with nullcontext(active) if active is not None else mlflow.start_run(run_name=name) as run:
        params = {"cnnaudit.version": summary.get("version"), "model.sha256": model.get("sha256"),
                  "model.format": model.get("format"), "seed": summary.get("seed"),
                  "n_samples": (summary.get("data") or {}).get("n_samples")}
        if comparison:
            params["baseline.sha256"] = comparison["baseline"]["sha256"]
        mlflow.log_params({k: str(v) for k, v in params.items() if v is not None})
        mlflow.log_metrics(metrics_of(summary, comparison))
        mlflow.set_tags({"cnnaudit.complete": str(not summary.get("errors")).lower(),
                         "cnnaudit.kind": "comparison" if comparison else "audit"})
        for key in ("summary", "report", "model_card", "comparison"):
            if paths.get(key):
                mlflow.log_artifact(str(paths[key]), artifact_path="cnnaudit")
        return run.info.run_id

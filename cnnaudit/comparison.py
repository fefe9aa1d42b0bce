"""Release comparison: a candidate model against a baseline on the same images, paired.

Both models are audited with the same images, seed and options (the corruptions are the same draws per
sample: they are keyed by seed and sample id; attacks run per model). Per condition (clean; each
adversarial budget's worst case; each corruption and severity; each class and each metadata group, clean) the two
models' per-sample outcomes are paired: `n_improved` (wrong under the baseline, right under the
candidate), `n_regressed` (the reverse), the accuracy delta with a seeded percentile-bootstrap interval
over samples (resampling pairs keeps the pairing), and an exact McNemar p-value on the discordant pairs,
Holm-adjusted across all conditions. Two models that make the same decisions have no discordant pairs,
so nothing can be significant between them, whatever their logits' scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import aggregate
from .gate.metrics import diff_findings
from .stats import holm, mcnemar_exact, proportion

N_BOOT = 2000
ALPHA = 0.05
GALLERY = 12


def _paired(check: str, condition: str, base: np.ndarray, cand: np.ndarray, rng) -> dict:
    base, cand = base.astype(bool), cand.astype(bool)
    n = len(base)
    improved, regressed = int((~base & cand).sum()), int((base & ~cand).sum())
    delta = (cand.mean() - base.mean()) if n else None
    ci = None
    if n:
        idx = rng.integers(0, n, size=(N_BOOT, n))
        boots = cand[idx].mean(axis=1) - base[idx].mean(axis=1)
        ci = [round(float(np.quantile(boots, 0.025)), 6), round(float(np.quantile(boots, 0.975)), 6)]
    return {"check": check, "condition": condition, "n": n, "baseline_accuracy": proportion(int(base.sum()), n),
            "candidate_accuracy": proportion(int(cand.sum()), n),
            "delta": None if delta is None else round(float(delta), 6), "delta_ci": ci,
            "p_value": mcnemar_exact(regressed, improved), "n_improved": improved, "n_regressed": regressed}


def _outcomes(result) -> dict[tuple[str, str], pd.Series]:
    """(check, condition) -> per-sample correct (indexed by sample id), from a result's rows."""
    out = {}
    for r in result.results:
        if r.summary.get("failed") or not len(r.rows) or "correct" not in r.rows:
            continue
        if r.name not in ("clean", "adversarial", "corruption"):
            continue
        for condition, g in r.rows.groupby("condition", sort=False):
            out[(r.name, str(condition))] = g.set_index("sample_id")["correct"].astype(bool)
    return out


def conditions(baseline, candidate, *, seed: int) -> list[dict]:
    """The paired comparison of two AuditResults of the same images (see the module docstring)."""
    rng = np.random.default_rng(seed)
    a, b = _outcomes(baseline), _outcomes(candidate)
    rows = []
    for key in [k for k in a if k in b]:
        ids = a[key].index.intersection(b[key].index)
        rows.append(_paired(*key, a[key].loc[ids].to_numpy(), b[key].loc[ids].to_numpy(), rng))
    clean_a, clean_b = a.get(("clean", "clean")), b.get(("clean", "clean"))
    base_rows = next(r.rows for r in baseline.results if r.name == "clean")
    attributes = aggregate.group_columns(base_rows, baseline.summary["data"]["attributes"])
    labels = base_rows.set_index("sample_id")["label_name"].astype(str)
    for name in baseline.summary["data"]["classes"]:  # each class, clean: which class got worse
        ids = labels.index[labels == str(name)].intersection(clean_b.index)
        if len(ids):
            rows.append(_paired("class", str(name), clean_a.loc[ids].to_numpy(), clean_b.loc[ids].to_numpy(), rng))
    for attr in attributes:  # each metadata group, clean
        values = base_rows.set_index("sample_id")[attr].astype(str)
        for value in sorted(values.unique()):
            ids = values.index[values == value].intersection(clean_b.index)
            rows.append(_paired("subgroups", f"{attr} = {value}", clean_a.loc[ids].to_numpy(),
                                clean_b.loc[ids].to_numpy(), rng))
    for row, p in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_adjusted"] = p
        row["significant"] = bool(p < ALPHA)
    return sorted(rows, key=lambda r: (r["p_adjusted"], r["check"], r["condition"]))


@dataclass
class Comparison:
    baseline: object  # AuditResult
    candidate: object
    comparison: dict = field(default_factory=dict)

    def write(self, out_dir) -> dict[str, Path]:
        from .io import write_json, write_text
        out = Path(out_dir)
        self.baseline.write(out / "baseline")
        self.candidate.write(out / "candidate")
        return {"comparison": write_json(out / "comparison.json", self.comparison),
                "report": write_text(out / "report.html", self.html())}

    def html(self) -> str:
        from .report.render import environment
        return environment().get_template("comparison.html.j2").render(c=self.comparison)


def compare(baseline_model, candidate_model, data, *, unsafe_pickle: bool = False, **settings) -> Comparison:
    """Audit both models on `data` with the same settings (those of cnnaudit.audit) and compare them, paired.

    Examples
    --------
    >>> c = cnnaudit.compare("v1/model.pt", "v2/model.pt", "data/", limit=500)  # doctest: +SKIP
    >>> [r for r in c.comparison["conditions"] if r["significant"]]  # doctest: +SKIP
    """
    from . import audit
    base = audit(baseline_model, data, unsafe_pickle=unsafe_pickle, **settings)
    cand = audit(candidate_model, data, unsafe_pickle=unsafe_pickle, **settings)
    return compare_results(base, cand)


def compare_results(base, cand) -> Comparison:
    """The comparison of two finished audits of the same images with the same seed and options."""
    seed = base.summary["seed"]
    rows = conditions(base, cand, seed=seed)
    comparison = {
        "baseline": {"path": base.summary["model"]["path"], "sha256": base.summary["model"]["sha256"]},
        "candidate": {"path": cand.summary["model"]["path"], "sha256": cand.summary["model"]["sha256"]},
        "seed": seed, "n_samples": cand.summary["data"]["n_samples"], "conditions": rows,
        "n_significant": sum(r["significant"] for r in rows),
        "regressions": [r for r in rows if r["significant"] and r["delta"] < 0],
        "improvements": [r for r in rows if r["significant"] and r["delta"] > 0],
        "findings": diff_findings(base.summary, cand.summary),
        "gallery": _regressed_samples(base, cand),
    }
    return Comparison(base, cand, comparison)


def _regressed_samples(base, cand) -> list[dict]:
    """Clean samples right under the baseline and wrong under the candidate, most confident errors first."""
    a = next(r.rows for r in base.results if r.name == "clean").set_index("sample_id")
    b = next(r.rows for r in cand.results if r.name == "clean").set_index("sample_id")
    ids = a.index[a["correct"].astype(bool)].intersection(b.index[~b["correct"].astype(bool)])
    worst = b.loc[ids].sort_values("confidence", ascending=False).head(GALLERY)
    return [{"sample_id": int(i), "path": r["path"], "label": r["label_name"],
             "baseline": a.loc[i, "prediction_name"], "candidate": r["prediction_name"]} for i, r in worst.iterrows()]

"""Per-group metrics and between-group gaps, as pure functions of per-sample rows.

Statistics: Wilson intervals per group; gap = largest minus smallest accuracy and ratio = smallest over
largest among groups with at least `min_size` samples, each with a seeded bootstrap interval; the
attribute's p-value is the smallest two-sided Fisher exact test of a group against the rest, times
the number of groups compared (Bonferroni within the attribute). Callers adjust across attributes
with Holm. Smaller groups are reported as "insufficient data" and never ranked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import aggregate
from ..stats import bootstrap_gap, expected_calibration_error, fisher_vs_rest, holm

ALPHA = 0.05


def group_accuracy(rows: pd.DataFrame, column: str, min_size: int):
    """Per group of `column`: ({value, n, accuracy, accuracy_ci, insufficient, p_vs_rest}, the group's rows)."""
    k_all, n_all = int(rows["correct"].sum()), len(rows)
    for value, g in rows.groupby(rows[column].astype(str), sort=True):
        acc = aggregate.accuracy(g)
        yield {"value": value, "n": acc["n"], "accuracy": acc["accuracy"], "accuracy_ci": acc["accuracy_ci"],
               "insufficient": acc["n"] < min_size,
               "p_vs_rest": round(fisher_vs_rest(int(g["correct"].sum()), len(g), k_all, n_all), 6)}, g


def group_metrics(rows: pd.DataFrame, column: str, classes: list[str], min_size: int) -> list[dict]:
    """group_accuracy plus per-class TPR and FPR, mean confidence and ECE."""
    out = []
    for record, g in group_accuracy(rows, column, min_size):
        per_class = {}
        for c, name in enumerate(classes):
            pos, neg = g["label"] == c, g["label"] != c
            per_class[name] = {
                "tpr": round(float((g.loc[pos, "prediction"] == c).mean()), 6) if pos.any() else None,
                "fpr": round(float((g.loc[neg, "prediction"] == c).mean()), 6) if neg.any() else None,
                "n": int(pos.sum())}
        out.append({**record, "mean_confidence": round(float(g["confidence"].mean()), 6),
                    "ece": expected_calibration_error(g["confidence"].to_numpy(), g["correct"].to_numpy()),
                    "per_class": per_class})
    return out


def gap(groups: list[dict], *, seed: int) -> dict:
    """Gap, ratio, their bootstrap intervals and the within-attribute p-value over sufficient groups."""
    ok = [g for g in groups if not g["insufficient"]]
    if len(ok) < 2:
        return {"gap": None, "gap_ci": None, "ratio": None, "ratio_ci": None, "p_value": None,
                "best": None, "worst": None, "n_compared": len(ok)}
    accs = [g["accuracy"] for g in ok]
    best, worst = ok[int(np.argmax(accs))], ok[int(np.argmin(accs))]
    boot = bootstrap_gap([round(g["accuracy"] * g["n"]) for g in ok], [g["n"] for g in ok], seed=seed)
    p = min(1.0, min(g["p_vs_rest"] for g in ok) * len(ok))
    return {"gap": round(best["accuracy"] - worst["accuracy"], 6), "gap_ci": boot["gap_ci"],
            "ratio": round(worst["accuracy"] / best["accuracy"], 6) if best["accuracy"] else None,
            "ratio_ci": boot["ratio_ci"], "p_value": round(p, 6), "best": best["value"], "worst": worst["value"],
            "n_compared": len(ok)}


def judge(entries: list[dict]) -> None:
    """Holm-adjust the p-values of a family of gap tests in place and give each a verdict."""
    tested = [e for e in entries if e["p_value"] is not None]
    for e, p in zip(tested, holm([e["p_value"] for e in tested])):
        e["p_adjusted"] = round(p, 6)
        e["significant"] = p < ALPHA
        e["verdict"] = "significant" if p < ALPHA else "not significant"
    for e in entries:
        if e["p_value"] is None:
            e.update(p_adjusted=None, significant=False, verdict="insufficient data")


def with_intersections(rows: pd.DataFrame, pairs: list[tuple[str, str]]) -> tuple[pd.DataFrame, list[str]]:
    rows = rows.copy()
    names = []
    for a, b in pairs:
        name = f"{a}×{b}"
        rows[name] = rows[a].astype(str) + " × " + rows[b].astype(str)
        names.append(name)
    return rows, names

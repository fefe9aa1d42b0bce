"""Per-group metrics and between-group gaps, as pure functions of per-sample rows.

Statistics: Wilson intervals per group. The gap is stated for one named pair, the best and the worst
group among those with at least `min_size` samples, and everything about it is computed for that pair:
the difference with Newcombe's interval, the ratio with a seeded bootstrap interval, and the p-value of
a two-sided Fisher exact test of the two groups, times the number of pairs the pair was chosen from
(Bonferroni for the selection). (A percentile bootstrap of max - min over all groups is biased upward:
four equal groups got [2.5%, 25%], an interval excluding its own estimate of 0; and the smallest
group-vs-rest p-value tested another question than the finding "C is 11.7 points below A".) Callers
adjust across attributes with Holm. Smaller groups are "insufficient data" and never ranked; missing and
blank values are not a group ("missing" in the data audit).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import aggregate
from ..stats import (ALPHA, bootstrap_ratio_ci, expected_calibration_error, fisher_pair, fisher_vs_rest, holm, p_value,
                     newcombe_difference_ci)


present = aggregate.present  # the one rule for a missing value, shared with the other checks' group tables


def group_accuracy(rows: pd.DataFrame, column: str, min_size: int):
    """Per group of `column`: ({value, n, accuracy, accuracy_ci, insufficient, p_vs_rest}, the group's rows).
    Rows whose value is missing or blank are left out."""
    rows = rows[present(rows[column])]
    k_all, n_all = int(rows["correct"].sum()), len(rows)
    for value, g in rows.groupby(aggregate.group_values(rows[column]), sort=True):
        acc = aggregate.accuracy(g)
        yield {"value": value, "n": acc["n"], "accuracy": acc["accuracy"], "accuracy_ci": acc["accuracy_ci"],
               "insufficient": acc["n"] < min_size,
               "p_vs_rest": p_value(fisher_vs_rest(int(g["correct"].sum()), len(g), k_all, n_all))}, g


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


def gap(groups: list[dict], *, seed: int, measure: str = "accuracy") -> dict:
    """Best minus worst `measure` (a share per group, with k = round(share * n)) among sufficient groups:
    the named pair's difference, Newcombe interval, ratio with its bootstrap interval, and its Fisher
    p-value, Bonferroni-adjusted for the n(n-1)/2 pairs it was chosen from."""
    ok = [g for g in groups if not g["insufficient"] and g.get(measure) is not None]
    if len(ok) < 2:
        return {"gap": None, "gap_ci": None, "ratio": None, "ratio_ci": None, "p_value": None,
                "best": None, "worst": None, "n_compared": len(ok), "selection": None}
    shares = [g[measure] for g in ok]
    best, worst = ok[int(np.argmax(shares))], ok[int(np.argmin(shares))]
    n_b, n_w = best.get(f"{measure}_n", best["n"]), worst.get(f"{measure}_n", worst["n"])
    k_b, k_w = round(best[measure] * n_b), round(worst[measure] * n_w)
    pairs = len(ok) * (len(ok) - 1) // 2
    return {"gap": round(best[measure] - worst[measure], 6), "gap_ci": newcombe_difference_ci(k_b, n_b, k_w, n_w),
            "ratio": round(worst[measure] / best[measure], 6) if best[measure] else None,
            "ratio_ci": bootstrap_ratio_ci(k_w, n_w, k_b, n_b, seed=seed) if k_b else None,
            "p_value": p_value(min(1.0, fisher_pair(k_b, n_b, k_w, n_w) * pairs)),
            "best": best["value"], "worst": worst["value"], "n_compared": len(ok),
            "selection": f"the highest and lowest of {len(ok)} groups; interval for this pair, p-value "
                         f"Bonferroni-adjusted for the {pairs} pair(s) it was chosen from"}


def holm_verdicts(entries: list[dict]) -> None:
    """Holm-adjust the p-values of a family of gap tests in place and give each a verdict."""
    tested = [e for e in entries if e["p_value"] is not None]
    for e, p in zip(tested, holm([e["p_value"] for e in tested])):
        e["p_adjusted"] = p_value(p)
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
        # a blank either side leaves the pair in no group, as a blank leaves the image in no group of a or b
        rows[name] = aggregate.group_values(rows[a]) + " × " + aggregate.group_values(rows[b])
        names.append(name)
    return rows, names

"""Aggregates are small pure functions of per-sample rows; summary, report and gate read their output."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from .stats import expected_calibration_error, proportion, wilson_ci


def accuracy(rows: pd.DataFrame) -> dict:
    n = int(len(rows))
    k = int(rows["correct"].sum()) if n else 0
    return {"accuracy": proportion(k, n), "accuracy_ci": wilson_ci(k, n), "n": n}


def per_class(rows: pd.DataFrame, classes: list[str]) -> dict[str, dict]:
    labels = list(range(len(classes)))
    p, r, f, n = precision_recall_fscore_support(rows["label"], rows["prediction"], labels=labels,
                                                 zero_division=0)
    return {name: {"precision": round(float(p[i]), 6), "recall": round(float(r[i]), 6),
                   "f1": round(float(f[i]), 6), "n": int(n[i])} for i, name in enumerate(classes)}


def confusion(rows: pd.DataFrame, n_classes: int) -> list[list[int]]:
    return confusion_matrix(rows["label"], rows["prediction"], labels=list(range(n_classes))).tolist()


def ece(rows: pd.DataFrame) -> float | None:
    return expected_calibration_error(rows["confidence"].to_numpy(), rows["correct"].to_numpy())


def most_confident_errors(rows: pd.DataFrame, k: int) -> pd.DataFrame:
    wrong = rows[~rows["correct"].astype(bool)]
    return wrong.sort_values(["confidence", "sample_id"], ascending=[False, True], kind="stable").head(k)


def round_floats(values: np.ndarray, digits: int = 6) -> list[float]:
    return [round(float(v), digits) for v in values]


def shared_labels(name, *columns) -> list[str]:
    """name(*values) per row, one string object per distinct value combination: a 10,000-image audit has
    hundreds of thousands of rows but a few dozen conditions, and a string per row cost megabytes."""
    cache: dict = {}
    return [cache.get(key) or cache.setdefault(key, name(*key)) for key in zip(*columns)]


def stack_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-batch column dicts concatenated one column at a time, emptying `parts` as it goes: frames per
    batch and their concatenation would hold every row twice at the peak."""
    out = {}
    for key in list(parts[0]) if parts else []:
        out[key] = np.concatenate([p.pop(key) for p in parts])
    parts.clear()
    return out


def present(values: pd.Series) -> pd.Series:
    """False where a metadata value is missing or blank: such rows belong to no group."""
    return values.notna() & (values.astype(str).str.strip() != "")


def group_values(values: pd.Series) -> pd.Series:
    """Metadata values as group names (strings), missing where the value is missing or blank. astype(str)
    alone makes a missing value the group 'nan' under pandas 2 (beside a real value 'nan') and keeps it
    missing under pandas 3, whose sort then meets a float among the strings. Whole numbers read as floats
    (pandas makes a column of ids floats when one cell is blank) are named as integers: patient 17 is '17'
    in a set with a blank id and in one without."""
    keep = present(values)
    if pd.api.types.is_float_dtype(values):
        v = values.to_numpy(dtype=float)
        real = v[keep.to_numpy()]
        if len(real) and bool(np.all(np.isfinite(real) & (real == np.round(real)))):
            names = pd.Series([str(int(x)) if k else None for x, k in zip(v, keep)], index=values.index,
                              dtype=object)
            return names.where(keep)
    return values.astype(str).where(keep)


MAX_GROUP_VALUES = 20  # a column with more distinct values is an identifier, not a group


def group_columns(rows: pd.DataFrame, attributes: list[str]) -> list[str]:
    """The one rule for which metadata columns define subgroups (every check's per-group tables and the
    subgroups check's default --group-by): not an artifact's box or mask, 2 to MAX_GROUP_VALUES values."""
    return [a for a in attributes if not a.endswith(("_box", "_mask")) and 1 < rows[a].nunique() <= MAX_GROUP_VALUES]


def accuracy_by(rows: pd.DataFrame, keys: list[str], prefix: str = "") -> list[dict]:
    """Accuracy with a Wilson interval per combination of `keys` (values as they appear, sorted),
    as records {key: value, ..., <prefix>accuracy, <prefix>accuracy_ci, n}."""
    out = []
    for values, g in rows[[*keys, "correct"]].groupby(keys, sort=True):  # groups of the needed columns only
        values = values if isinstance(values, tuple) else (values,)
        acc = accuracy(g)
        out.append({**{k: (v.item() if hasattr(v, "item") else v) for k, v in zip(keys, values)},
                    f"{prefix}accuracy": acc["accuracy"], f"{prefix}accuracy_ci": acc["accuracy_ci"], "n": acc["n"]})
    return out


def weak_classes(rows: pd.DataFrame, classes: list[str]) -> list[dict]:
    """Per class: recall against the accuracy on every other class, the difference with Newcombe's
    interval, and a two-sided Fisher exact p-value, Holm-adjusted across classes (one family)."""
    from .stats import fisher_vs_rest, holm, newcombe_difference_ci
    k_all, n_all = int(rows["correct"].sum()), len(rows)
    stats = rows.groupby("label")["correct"].agg(["sum", "count"])
    out = []
    for label, (k, n) in stats.iterrows():
        k, n = int(k), int(n)
        rest_k, rest_n = k_all - k, n_all - n
        if rest_n == 0:
            continue
        errors = most_confident_errors(rows[rows["label"] == label], 6)
        out.append({"class": classes[int(label)], "label": int(label), "recall": proportion(k, n), "n": n,
                    "rest_accuracy": proportion(rest_k, rest_n), "gap": round(rest_k / rest_n - k / n, 6),
                    "gap_ci": newcombe_difference_ci(rest_k, rest_n, k, n), "p_value": fisher_vs_rest(k, n, k_all, n_all),
                    "sample_ids": errors["sample_id"].astype(int).tolist()})
    for r, p in zip(out, holm([r["p_value"] for r in out])):
        r["p_adjusted"] = p
    return out


def confusions(rows: pd.DataFrame, classes: list[str], top: int = 5) -> list[dict]:
    """The largest confusion pairs (true class read as another), by count: count, share of the true class
    with a Wilson interval, and the sample ids of the most confident such errors."""
    wrong = rows[~rows["correct"].astype(bool)]
    sizes = rows["label"].value_counts()
    pairs = wrong.groupby(["label", "prediction"]).size().sort_values(ascending=False, kind="stable")
    out = []
    for (label, pred), count in pairs.head(top).items():
        n = int(sizes[label])
        mine = wrong[(wrong["label"] == label) & (wrong["prediction"] == pred)]
        out.append({"true": classes[int(label)], "predicted": classes[int(pred)], "count": int(count), "n": n,
                    "share": proportion(int(count), n), "share_ci": wilson_ci(int(count), n),
                    "sample_ids": most_confident_errors(mine, 6)["sample_id"].astype(int).tolist()})
    return out

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
    hundreds of thousands of rows but a few dozen conditions, and a string per row cost ~15 MB."""
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


def group_columns(rows: pd.DataFrame, attributes: list[str], max_values: int = 20) -> list[str]:
    """Attribute columns that define subgroups: not artifact boxes/masks, at most `max_values` values."""
    return [a for a in attributes if not a.endswith(("_box", "_mask")) and rows[a].nunique() <= max_values]


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

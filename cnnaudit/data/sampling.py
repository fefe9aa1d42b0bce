"""`--limit N`: a seeded subset with each class in its dataset proportion."""

from __future__ import annotations

import numpy as np
import pandas as pd


def seeded_subset(ids, n: int, seed: int) -> np.ndarray:
    """At most n of `ids`, drawn without replacement by `seed`, in ascending order."""
    ids = np.asarray(ids)
    return np.sort(np.random.default_rng(seed).choice(ids, size=min(n, len(ids)), replace=False))


def stratified_subset(table: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """Largest-remainder allocation per class, then a seeded draw inside each class.

    Hand-written because scikit-learn's `train_test_split(stratify=...)` refuses classes with a single
    sample, and a small audit subset of a long-tailed dataset has many.
    """
    if limit >= len(table):
        return table
    counts = table["label"].value_counts().sort_index()
    quota = counts / counts.sum() * limit
    alloc = np.floor(quota).astype(int)
    remainder = (quota - alloc).sort_values(ascending=False, kind="stable")
    for label in remainder.index[: limit - int(alloc.sum())]:
        alloc[label] += 1
    rng = np.random.default_rng(seed)
    picked = []
    for label, k in alloc.items():
        ids = table.index[table["label"] == label].to_numpy()
        if k:
            picked.append(rng.choice(ids, size=int(k), replace=False))
    keep = np.sort(np.concatenate(picked)) if picked else np.array([], dtype=int)
    return table.loc[keep]

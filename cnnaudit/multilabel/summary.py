"""The top-level `clean` section of a multi-label audit: every (image, label) decision pooled, so readers of
single-label summaries see a meaningful number (its accuracy is 1 - Hamming loss; per class, `present` is
the pooled sensitivity and `absent` the pooled specificity). Each label's own sections are under
`per_label`, the joint metrics under `multilabel`."""

from __future__ import annotations

import pandas as pd

from ..checks.clean import summarize_clean

POOLED_CLASSES = ["absent", "present"]


def pooled_clean(per_label: dict) -> dict:
    rows = pd.concat([r.rows for results in per_label.values() for r in results if r.name == "clean"],
                     ignore_index=True)
    rows = rows.assign(label_name=[POOLED_CLASSES[int(v)] for v in rows["label"]],
                       prediction_name=[POOLED_CLASSES[int(v)] for v in rows["prediction"]])
    out = summarize_clean(rows, POOLED_CLASSES)
    first = next(r for results in per_label.values() for r in results if r.name == "clean")
    out["randomness"] = first.summary.get("randomness")
    out["pooled"] = "every (image, label) decision: accuracy is 1 - Hamming loss"
    return out

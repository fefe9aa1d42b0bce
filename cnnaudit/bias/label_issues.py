"""Confident learning (Northcutt, Jiang & Chuang 2021, "Confident learning: estimating uncertainty in
dataset labels"), the `confident_learning` filter: per class a confidence threshold, the mean predicted
probability of that class over the images labelled with it; an image is *confidently* of class j when
p_j reaches j's threshold; an image whose confident class (the most probable one when several are
confident) differs from its given label is counted off the confident joint's diagonal and flagged,
unless the model's own prediction is the given label. Issues are ranked by self-confidence (the
probability of the given label), lowest first.

Written in numpy (about 20 lines) rather than importing cleanlab, which is AGPL-3.0 and so cannot be a
run-time requirement of this Apache-2.0 package; the tests cross-check it against cleanlab's
`find_label_issues(..., filter_by="confident_learning")`.
"""

from __future__ import annotations

import numpy as np

TOLERANCE = 1e-6  # cleanlab's float tolerance in the threshold comparison and the prediction check


def confident_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per class, the mean probability of it over the images given it; 2 (never reached) for absent classes."""
    k = probs.shape[1]
    out = np.array([probs[labels == c, c].mean() if (labels == c).any() else 2.0 for c in range(k)])
    return np.clip(out, 2 * TOLERANCE, None)


def find_label_issues(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(is_issue, suggested_label, self_confidence) per image, for given labels (N,) and out-of-sample
    predicted probabilities (N, K)."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    rows = np.arange(len(labels))
    confident = probs >= confident_thresholds(labels, probs) - TOLERANCE
    n_confident = confident.sum(axis=1)
    guess = np.where(n_confident > 1, probs.argmax(axis=1), confident.argmax(axis=1))
    issue = (n_confident > 0) & (guess != labels)
    nudged = probs.copy()
    nudged[rows, labels] += TOLERANCE  # the model itself predicts the given label: not an issue
    issue &= nudged.argmax(axis=1) != labels
    return issue, np.where(issue, guess, labels), probs[rows, labels]

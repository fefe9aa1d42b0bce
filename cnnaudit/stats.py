"""Small pure statistics over per-sample rows.

Intervals are Wilson score intervals (scipy's `binomtest(...).proportion_ci(method="wilson")`): unlike the
normal approximation they stay inside [0, 1] and keep their coverage for small groups and for
accuracies near 0 or 1, which is exactly where audits look.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

CONFIDENCE = 0.95


def wilson_ci(successes: int, n: int, confidence: float = CONFIDENCE) -> list[float] | None:
    if n == 0:
        return None
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return [round(float(ci.low), 6), round(float(ci.high), 6)]


def proportion(successes: int, n: int) -> float | None:
    return None if n == 0 else round(float(successes) / n, 6)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float | None:
    """ECE with equal-width confidence bins (Guo et al. 2017, 15 bins).

    Written by hand because scikit-learn has `calibration_curve` but no ECE; it is a weighted mean of
    |accuracy - confidence| over the bins.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.size == 0:
        return None
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return round(float(ece), 6)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Per-bin mean confidence, accuracy and count, for the reliability diagram."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    out = []
    for b in range(n_bins):
        in_bin = bins == b
        n = int(in_bin.sum())
        out.append({
            "low": b / n_bins, "high": (b + 1) / n_bins, "n": n,
            "confidence": float(confidence[in_bin].mean()) if n else None,
            "accuracy": float(correct[in_bin].mean()) if n else None,
        })
    return out

"""Small pure statistics over per-sample rows.

Intervals are Wilson score intervals (scipy's `binomtest(...).proportion_ci(method="wilson")`): unlike the
normal approximation they stay inside [0, 1] and keep their coverage for small groups and for
accuracies near 0 or 1, which is exactly where audits look.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

CONFIDENCE = 0.95
ALPHA = 0.05  # the one significance level (1 - CONFIDENCE): every test, Holm family and finding uses it


def wilson_ci(successes: int, n: int, confidence: float = CONFIDENCE) -> list[float] | None:
    if n == 0:
        return None
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return [round(float(ci.low), 6), round(float(ci.high), 6)]


def p_value(p: float) -> float:
    """A p-value for summary.json: six significant digits, never rounded to 0 (a Fisher p of 3.4e-14 is
    written as such; rounding to decimals wrote it, and its Holm adjustment, as 0.0)."""
    return float(f"{float(p):.6g}")


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


def fisher_vs_rest(k: int, n: int, k_all: int, n_all: int) -> float:
    """Two-sided Fisher exact p-value: is a group's accuracy (k of n) different from the rest's?
    Exact, so small groups get honest p-values where a chi-square approximation would not."""
    from scipy.stats import fisher_exact
    rest_k, rest_n = k_all - k, n_all - n
    if n == 0 or rest_n == 0:
        return 1.0
    return float(fisher_exact([[k, n - k], [rest_k, rest_n - rest_k]]).pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control, uniformly more powerful than
    Bonferroni); scipy has no Holm and statsmodels would be a dependency for ten lines."""
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return [float(a) for a in adjusted]


def newcombe_difference_ci(k1: int, n1: int, k2: int, n2: int, confidence: float = CONFIDENCE) -> list[float]:
    """Interval for p1 - p2 of two independent proportions: Newcombe's hybrid score method (method 10 of
    Newcombe 1998), built from each group's Wilson interval. It always contains its estimate, and holds
    its coverage for small groups and proportions near 0 or 1, where the Wald interval does not."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_ci(k1, n1, confidence), wilson_ci(k2, n2, confidence)
    d = p1 - p2
    return [round(max(-1.0, d - ((p1 - l1) ** 2 + (u2 - p2) ** 2) ** 0.5), 6),
            round(min(1.0, d + ((u1 - p1) ** 2 + (p2 - l2) ** 2) ** 0.5), 6)]


def newcombe_paired_ci(both: int, first_only: int, second_only: int, neither: int,
                       confidence: float = CONFIDENCE) -> list[float] | None:
    """Interval for p1 - p2 of two proportions measured on the same samples (paired: clean against
    corrupted, baseline against candidate): Newcombe's method 10 for paired proportions (Newcombe 1998,
    Statistics in Medicine 17: 2635-2650), each margin's Wilson interval combined with the correlation phi
    of the 2x2 table, phi corrected towards 0 by n/2 when positive (as in Newcombe's paper and Altman et
    al., "Statistics with Confidence", 2000). `first_only`: right in the first measurement only. Unlike a
    bootstrap over pairs it is deterministic and does not collapse to [0, 0] when no sample changed."""
    a, b, c, d = int(both), int(first_only), int(second_only), int(neither)
    n = a + b + c + d
    if n == 0:
        return None
    p1, p2 = (a + b) / n, (a + c) / n
    (l1, u1), (l2, u2) = wilson_ci(a + b, n, confidence), wilson_ci(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = corrected / margins ** 0.5 if margins else 0.0
    diff = p1 - p2
    low = diff - max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2) ** 0.5
    high = diff + max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2) ** 0.5
    return [round(max(-1.0, low), 6), round(min(1.0, high), 6)]


def bootstrap_ratio_ci(k_low: int, n_low: int, k_high: int, n_high: int, *, seed: int, n_boot: int = 2000,
                       confidence: float = CONFIDENCE) -> list[float]:
    """Seeded percentile-bootstrap interval of the ratio p_low / p_high of one named pair (each group's
    resample is one binomial draw). The pair's order is fixed, so equal groups give an interval around 1."""
    rng = np.random.default_rng(seed)
    low = rng.binomial(n_low, k_low / n_low, size=n_boot) / n_low
    high = rng.binomial(n_high, k_high / n_high, size=n_boot) / n_high
    ratios = np.where(high > 0, low / np.where(high > 0, high, 1), 1.0)
    a = (1 - confidence) / 2
    return [round(float(np.quantile(ratios, a)), 6), round(float(np.quantile(ratios, 1 - a)), 6)]


def fisher_pair(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher exact p-value: do two groups' accuracies (k1 of n1, k2 of n2) differ?"""
    from scipy.stats import fisher_exact
    return float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for paired outcomes on the same samples: b changed one way, c the
    other (a binomial test of b against b + c at 1/2)."""
    return 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)

"""Statistics for auditing multi-label classifiers: K independent sigmoid outputs per image.

Pure numpy/scipy/scikit-learn over arrays: `truth` (N, K) of 0/1, `probability` (N, K) sigmoid outputs
(the ranking score for AUROC and average precision), `decision` (N, K) booleans (the model's call at each
label's threshold). Results follow `cnnaudit.stats`: JSON-able dicts of Python floats and ints rounded to 6
digits, intervals as `[low, high]`, p-values through `stats.p_value`, and None (never NaN) for a metric that
cannot be computed (AUROC with one class present, sensitivity without positives, ...).

AUROC intervals and tests are DeLong's (DeLong, DeLong & Clarke-Pearson 1988, Biometrics 44(3): 837-845),
computed with the midrank algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21(11): 1389-1393),
O(N log N) instead of the O(n_pos * n_neg) pairwise table. They are written here because scikit-learn has
`roc_auc_score` but no variance, interval or test for it; they reproduce pROC (Robin et al. 2011, BMC
Bioinformatics 12: 77), which uses the same algorithm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.metrics import average_precision_score, brier_score_loss

from cnnaudit.stats import CONFIDENCE, expected_calibration_error, p_value, proportion, wilson_ci

ECE_BINS = 15  # Guo et al. (2017): 15 equal-width bins


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def _truth_vector(truth: Any) -> np.ndarray:
    t = np.asarray(truth)
    if t.ndim != 1:
        raise ValueError(f"truth must be 1-D, got shape {t.shape}")
    if t.size and not np.isin(t, (0, 1)).all():
        raise ValueError("truth must hold only 0 and 1")
    return t.astype(bool)


def _score_vector(score: Any, n: int) -> np.ndarray:
    s = np.asarray(score, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"score must have shape ({n},), got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("score must be finite (no NaN or inf)")
    return s


def _placements(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """DeLong's structural components (placement values) from midranks (Sun & Xu 2014, eq. 4-6).

    V10[i]: share of negatives ranked below positive i; V01[j]: share of positives ranked above negative j
    (ties count 1/2 in both). AUROC = mean(V10) = mean(V01). None without positives or without negatives.
    """
    pos, neg = score[truth], score[~truth]
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        return None
    # rankdata's "average" method gives midranks, so tied scores count 1/2 (as in roc_auc_score)
    tz = rankdata(np.concatenate([pos, neg]))
    v10 = (tz[:m] - rankdata(pos)) / n
    v01 = 1.0 - (tz[m:] - rankdata(neg)) / m
    return v10, v01


def delong(truth, score) -> tuple[float, float | None] | None:
    """AUROC and its DeLong variance (DeLong et al. 1988), by the midrank algorithm of Sun & Xu (2014).

    truth: 0/1 array; score: floats, higher = more positive. Ties count 1/2, so the AUROC equals
    `sklearn.metrics.roc_auc_score`. Variance = S10/m + S01/n with S10, S01 the sample variances (ddof 1)
    of the structural components over the m positives and n negatives. Returns None without positives or
    without negatives; the variance is None when there is a single positive or a single negative (a sample
    variance of one value is undefined; pROC returns NA there too). Unrounded.
    """
    t = _truth_vector(truth)
    s = _score_vector(score, t.size)
    placements = _placements(t, s)
    if placements is None:
        return None
    v10, v01 = placements
    auc = float(v10.mean())
    m, n = v10.size, v01.size
    if m < 2 or n < 2:
        return auc, None
    return auc, float(v10.var(ddof=1) / m + v01.var(ddof=1) / n)


def _z(confidence: float) -> float:
    return float(norm.ppf(1 - (1 - confidence) / 2))


def auroc_ci(truth, score, confidence: float = CONFIDENCE) -> dict:
    """AUROC with DeLong's standard error and normal interval auc ± z·se clipped to [0, 1].

    The same interval as pROC's `ci.auc(method="delong")` (Robin et al. 2011). Keys: auroc, auroc_ci,
    auroc_se; all None without both classes, the interval and SE None with a single positive or negative.
    """
    result = delong(truth, score)
    if result is None:
        return {"auroc": None, "auroc_ci": None, "auroc_se": None}
    auc, var = result
    if var is None:
        return {"auroc": _r(auc), "auroc_ci": None, "auroc_se": None}
    se = var ** 0.5
    half = _z(confidence) * se
    return {"auroc": _r(auc), "auroc_ci": [_r(max(0.0, auc - half)), _r(min(1.0, auc + half))],
            "auroc_se": _r(se)}


def _delong_paired_raw(truth, score_a, score_b) -> tuple[float, float, float | None] | None:
    """(auroc_a, auroc_b, variance of auroc_a - auroc_b), unrounded; None without both classes."""
    t = _truth_vector(truth)
    pa = _placements(t, _score_vector(score_a, t.size))
    pb = _placements(t, _score_vector(score_b, t.size))
    if pa is None or pb is None:
        return None
    auc_a, auc_b = float(pa[0].mean()), float(pb[0].mean())
    m, n = pa[0].size, pa[1].size
    if m < 2 or n < 2:
        return auc_a, auc_b, None
    # DeLong et al. (1988) eq. for the covariance matrix S = S10/m + S01/n of the two AUROCs, each S
    # the sample covariance (ddof 1) of the paired structural components; var(a - b) = L S L', L = (1, -1)
    s = np.cov(np.vstack([pa[0], pb[0]])) / m + np.cov(np.vstack([pa[1], pb[1]])) / n
    var = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    return auc_a, auc_b, max(var, 0.0)


def delong_paired(truth, score_a, score_b) -> dict:
    """DeLong's test for two correlated AUROCs measured on the same images (DeLong et al. 1988).

    Two-sided z test of auroc_a - auroc_b against its variance from the structural components, as pROC's
    `roc.test(method="delong", paired=TRUE)`; the interval is difference ± z·se, clipped to [-1, 1].
    Keys: auroc_a, auroc_b, difference (a - b), difference_ci, p_value. A zero variance (the two scores
    rank the images identically, or differ by a constant placement) gives p = 1 for a zero difference and
    p = 0 otherwise; the undefined parts are None.
    """
    raw = _delong_paired_raw(truth, score_a, score_b)
    if raw is None:
        return {"auroc_a": None, "auroc_b": None, "difference": None, "difference_ci": None, "p_value": None}
    auc_a, auc_b, var = raw
    diff = auc_a - auc_b
    out = {"auroc_a": _r(auc_a), "auroc_b": _r(auc_b), "difference": _r(diff), "difference_ci": None,
           "p_value": None}
    if var is None:
        return out
    se = var ** 0.5
    half = _z(CONFIDENCE) * se
    out["difference_ci"] = [_r(max(-1.0, diff - half)), _r(min(1.0, diff + half))]
    if se == 0.0:
        out["p_value"] = 1.0 if diff == 0.0 else 0.0
    else:
        out["p_value"] = p_value(2 * norm.sf(abs(diff) / se))
    return out


def _matrices(truth, probability=None, decision=None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    t = np.asarray(truth)
    if t.ndim != 2:
        raise ValueError(f"truth must be (N, K), got shape {t.shape}")
    if t.size and not np.isin(t, (0, 1)).all():
        raise ValueError("truth must hold only 0 and 1")
    t = t.astype(np.int64)
    p = d = None
    if probability is not None:
        p = np.asarray(probability, dtype=np.float64)
        if p.shape != t.shape:
            raise ValueError(f"probability must have truth's shape {t.shape}, got {p.shape}")
        if not np.isfinite(p).all():
            raise ValueError("probability must be finite (no NaN or inf)")
    if decision is not None:
        d = np.asarray(decision)
        if d.shape != t.shape:
            raise ValueError(f"decision must have truth's shape {t.shape}, got {d.shape}")
        d = d.astype(bool)
    return t, p, d


def label_metrics(truth, probability, decision, names, thresholds) -> list[dict]:
    """One dict per label, in order: the label's prevalence, ranking quality and decision quality.

    Keys: label, threshold, n, n_positive, prevalence, auroc, auroc_ci, auroc_se (DeLong),
    average_precision (scikit-learn's step-wise AP; None without positives), sensitivity and
    sensitivity_ci (Wilson, over positives), specificity and specificity_ci (over negatives), precision
    (None when nothing is predicted positive), predicted_positive, ece (15 equal-width bins of the
    probability, weighted mean of |mean truth - mean probability|: Guo et al. 2017, ICML, adapted to one
    sigmoid output) and brier (Brier 1950: mean squared error of probability against truth).
    """
    t, p, d = _matrices(truth, probability, decision)
    n_images, k = t.shape
    if len(names) != k or len(thresholds) != k:
        raise ValueError(f"names and thresholds need one entry per label ({k})")
    out = []
    for j in range(k):
        y, prob, dec = t[:, j], p[:, j], d[:, j]
        n_pos = int(y.sum())
        n_neg = n_images - n_pos
        tp = int((dec & (y == 1)).sum())
        tn = int((~dec & (y == 0)).sum())
        predicted = int(dec.sum())
        row = {"label": str(names[j]), "threshold": _r(thresholds[j]), "n": n_images, "n_positive": n_pos,
               "prevalence": proportion(n_pos, n_images)}
        row.update(auroc_ci(y, prob))
        row["average_precision"] = _r(average_precision_score(y, prob)) if n_pos else None
        row.update({
            "sensitivity": proportion(tp, n_pos), "sensitivity_ci": wilson_ci(tp, n_pos),
            "specificity": proportion(tn, n_neg), "specificity_ci": wilson_ci(tn, n_neg),
            "precision": proportion(tp, predicted), "predicted_positive": predicted,
            # stats.expected_calibration_error bins its first argument and compares each bin's mean of
            # the second: here the probability against the 0/1 truth, which is the binary (per-output) ECE
            "ece": expected_calibration_error(prob, y, n_bins=ECE_BINS),
            "brier": _r(brier_score_loss(y, prob)) if n_images else None,
        })
        out.append(row)
    return out


def _mean_defined(per_label: list[dict], key: str) -> float | None:
    values = [row[key] for row in per_label if row.get(key) is not None]
    return _r(np.mean(values)) if values else None


def averages(truth, probability, decision, per_label: list[dict]) -> dict:
    """Macro and micro averages over the labels, and the whole-image scores.

    macro: plain means of each label's auroc, average_precision, sensitivity and specificity over the
    labels where it is defined (None if none). micro: the same metrics on the flattened (image, label)
    arrays (as scikit-learn's average="micro"). subset_accuracy (+ Wilson CI): share of images whose every
    label decision is right (scikit-learn's multilabel `accuracy_score`); hamming_loss: share of wrong
    (image, label) decisions.
    """
    t, p, d = _matrices(truth, probability, decision)
    n_images = t.shape[0]
    y, prob, dec = t.ravel(), p.ravel(), d.ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    micro = {
        "auroc": auroc_ci(y, prob)["auroc"],
        "average_precision": _r(average_precision_score(y, prob)) if n_pos else None,
        "sensitivity": proportion(int((dec & (y == 1)).sum()), n_pos),
        "specificity": proportion(int((~dec & (y == 0)).sum()), n_neg),
    }
    correct = d == t.astype(bool)
    exact = int(correct.all(axis=1).sum())
    return {
        "macro": {key: _mean_defined(per_label, key)
                  for key in ("auroc", "average_precision", "sensitivity", "specificity")},
        "micro": micro,
        "subset_accuracy": proportion(exact, n_images),
        "subset_accuracy_ci": wilson_ci(exact, n_images),
        "hamming_loss": proportion(int((~correct).sum()), correct.size),
        "n_images": n_images,
    }


def cooccurrence(truth, names) -> dict:
    """Label co-occurrence: counts[a][b] = images with both a and b (diagonal: images with a).

    Keys: labels, counts (K x K ints), images_without_label, mean_labels_per_image (None without images).
    """
    t, _, _ = _matrices(truth)
    if len(names) != t.shape[1]:
        raise ValueError(f"names needs one entry per label ({t.shape[1]})")
    per_image = t.sum(axis=1)
    return {
        "labels": [str(name) for name in names],
        "counts": (t.T @ t).astype(int).tolist(),
        "images_without_label": int((per_image == 0).sum()),
        "mean_labels_per_image": _r(per_image.mean()) if t.shape[0] else None,
    }


def confused_pairs(truth, decision, names, top: int = 10) -> list[dict]:
    """The label pairs the model confuses: it says b on images that have a but not b (a != b).

    Each: true (a), predicted (b), count (such images), n (images with a and without b), share = count/n
    and its Wilson share_ci. Only pairs with count > 0; sorted by the lower end of share_ci (descending, so
    a confusion must be both frequent and well supported to rank high), then count (descending), then the
    names; at most `top`.
    """
    t, _, d = _matrices(truth, decision=decision)
    k = t.shape[1]
    if len(names) != k:
        raise ValueError(f"names needs one entry per label ({k})")
    absent = 1 - t
    n_pair = t.T @ absent  # [a, b]: images with a and without b
    count_pair = t.T @ (d.astype(np.int64) * absent)  # ... on which the model says b
    rows = []
    for a in range(k):
        for b in range(k):
            if a == b or count_pair[a, b] == 0:
                continue
            count, n = int(count_pair[a, b]), int(n_pair[a, b])
            rows.append({"true": str(names[a]), "predicted": str(names[b]), "count": count, "n": n,
                         "share": proportion(count, n), "share_ci": wilson_ci(count, n)})
    rows.sort(key=lambda r: (-r["share_ci"][0], -r["count"], r["true"], r["predicted"]))
    return rows[:top]


def _plain(value: Any) -> Any:
    """A numpy scalar as its Python value (JSON-able); anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def group_auroc(truth_k, score_k, groups, min_size: int) -> list[dict]:
    """One label's AUROC (DeLong interval) within each group of images (e.g. a metadata attribute).

    groups: a pandas Series or array of group values, aligned by position; missing values (NaN, None)
    are left out. Each: group, n, n_positive, auroc, auroc_ci; auroc and auroc_ci are None when the group
    has fewer than `min_size` images or lacks a class. Groups sorted by str().
    """
    import pandas as pd

    t = _truth_vector(truth_k)
    s = _score_vector(score_k, t.size)
    g = np.asarray(groups, dtype=object)
    if g.shape != (t.size,):
        raise ValueError(f"groups must have shape ({t.size},), got {g.shape}")
    present = ~pd.isna(g)
    keys = np.array([_plain(v) for v in g], dtype=object)
    out = []
    for value in sorted(set(keys[present]), key=str):
        in_group = present & (keys == value)
        n = int(in_group.sum())
        row = {"group": value, "n": n, "n_positive": int(t[in_group].sum()), "auroc": None, "auroc_ci": None}
        if n >= min_size:
            ci = auroc_ci(t[in_group], s[in_group])
            row["auroc"], row["auroc_ci"] = ci["auroc"], ci["auroc_ci"]
        out.append(row)
    return out

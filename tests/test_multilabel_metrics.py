"""cnnaudit.multilabel.metrics: DeLong AUROC statistics and the multi-label audit metrics.

Checked against scikit-learn, against slow pairwise reference implementations written here, and against
pROC's published values on its own aSAH data (see ASAH below).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import accuracy_score, average_precision_score, hamming_loss, roc_auc_score

from cnnaudit.multilabel import metrics as M
from cnnaudit.stats import wilson_ci

# ---------------------------------------------------------------------------------------------------------
# Published reference: pROC's aSAH data set (113 patients with aneurysmal subarachnoid hemorrhage; Turck et
# al. 2010, Intensive Care Medicine 36(1): 107-115), as shipped in pROC (Robin et al. 2011, BMC
# Bioinformatics 12: 77; https://github.com/xrobin/pROC, file data/aSAH.RData, commit 5d15efd5c6ed). The
# columns below were decoded from that R data file (outcome: 1 = "Poor", 0 = "Good"; wfns: the WFNS grade
# 1-5, an ordered factor whose levels are its values; s100b and ndka: the two biomarkers), in its row order.
# The expected numbers are pROC's own, quoted from its repository (master, 2025-07-31, ee2877e858bc):
#   tests/testthat/print_output/r.s100b: roc(aSAH$outcome, aSAH$s100b) -> "Area under the curve: 0.7314"
#   tests/testthat/print_output/r.wfns:  "Area under the curve: 0.8237";  r.ndka: "Area under the curve: 0.612"
#   tests/testthat/test-var.R:    var(r.wfns) 0.00146991470882363, var(r.ndka) 0.0031908105493913,
#                                 var(r.s100b) 0.00266868245717244   (DeLong variances)
#   tests/testthat/test-ci.auc.R: ci.auc(r.ndka) = c(0.501244999271703, 0.611957994579946, 0.722670989888189)
#   tests/testthat/test-roc.test.R (paired DeLong, two-sided, 95%):
#     roc.test(r.wfns, r.s100b): Z = 2.20898359144091,  p = 0.0271757822291882, CI 0.0104061769564846 to
#                                0.174214419249478
#     roc.test(r.wfns, r.ndka):  Z = 2.79777591868904,  p = 0.00514557970691098, CI 0.0634011709339876 to
#                                0.3600405634833566
#     roc.test(r.ndka, r.s100b): Z = -1.39077002573558, p = 0.164295175223054, CI -0.2876917446341914 to
#                                0.0488706064228094
#     roc.test(r.wfns, r.wfns):  p = 1, Z = 0
# pROC's documented example `ci(roc(outcome ~ s100b, aSAH))` prints "95% CI: 0.6301-0.8326 (DeLong)".
# ---------------------------------------------------------------------------------------------------------
ASAH_POOR = ("00001101001011001011101000000000100110110000000001100010001010011101101111000110100000010000000000"
             "001111110001000")
ASAH_WFNS = ("11113254125255125225211112121134214541425511241125521251222151125214524414121421232421451154221113"
             "125225552445111")
ASAH_S100B = """
0.13 0.14 0.1 0.04 0.13 0.1 0.47 0.16 0.18 0.1 0.12 0.1 0.44 0.71 0.04 0.08 0.49 0.04 0.07 0.33 0.09
0.09 0.07 0.11 0.07 0.17 0.07 0.11 0.13 0.19 0.05 0.16 0.41 0.14 0.34 0.35 0.48 0.09 0.96 0.25 0.5
0.46 0.16 0.07 0.43 0.45 0.11 0.08 0.09 0.86 0.52 0.08 0.06 0.13 2.07 0.1 0.14 0.15 0.07 0.06 0.77
0.05 0.09 0.3 0.03 0.09 0.04 0.23 0.7 0.09 0.27 0.71 0.08 0.26 0.08 0.16 0.09 0.13 0.1 0.08 0.11
0.33 0.11 0.28 0.07 0.1 0.32 0.22 0.07 0.05 0.24 0.38 0.1 0.15 0.08 0.14 0.1 0.07 0.04 0.19 0.56
0.14 0.58 0.32 0.82 0.74 0.15 0.47 0.17 0.44 0.15 0.5 0.48
"""
ASAH_NDKA = """
3.01 8.54 8.09 10.42 17.4 12.75 6.0 13.2 15.54 6.01 15.96 17.86 5.18 8.9 13.41 20.75 11.6 16.11
32.37 54.82 32.41 49.94 40.34 9.47 6.29 12.53 6.54 6.3 80.3 12.8 9.8 9.81 9.85 18.21 5.03 14.04
21.93 8.02 7.42 8.38 6.59 9.63 13.12 7.96 14.34 41.43 7.63 7.06 12.59 13.56 3.87 9.44 7.66 12.98
419.19 27.19 22.27 9.95 21.22 11.73 10.4 58.83 6.39 11.09 12.22 13.67 17.21 22.63 12.9 9.7 21.57
8.23 72.57 15.54 10.51 10.6 14.57 5.19 9.63 4.61 21.48 17.3 12.71 9.44 11.07 19.46 10.83 5.37 11.97
7.75 9.83 10.55 28.49 8.53 12.57 12.9 46.83 11.68 12.67 9.01 9.57 34.06 11.72 14.26 47.61 11.67
24.58 10.33 13.87 15.89 22.43 6.79 13.45
"""
OUTCOME = np.array([int(c) for c in ASAH_POOR])
MARKERS = {
    "wfns": np.array([float(c) for c in ASAH_WFNS]),
    "s100b": np.array([float(v) for v in ASAH_S100B.split()]),
    "ndka": np.array([float(v) for v in ASAH_NDKA.split()]),
}


def test_asah_data_shape():
    assert OUTCOME.size == 113 and OUTCOME.sum() == 41  # pROC: "72 controls ... < 41 cases"
    assert all(v.size == 113 for v in MARKERS.values())


@pytest.mark.parametrize("marker,auc,var,printed", [
    ("wfns", 0.823678861788618, 0.00146991470882363, "0.8237"),
    ("ndka", 0.611957994579946, 0.0031908105493913, "0.612"),
    ("s100b", None, 0.00266868245717244, "0.7314"),
])
def test_delong_matches_proc(marker, auc, var, printed):
    got_auc, got_var = M.delong(OUTCOME, MARKERS[marker])
    if auc is not None:
        assert got_auc == pytest.approx(auc, rel=1e-12)
    assert f"{got_auc:.4g}" == printed
    assert got_var == pytest.approx(var, rel=1e-10)


def test_auroc_ci_matches_proc():
    ndka = M.auroc_ci(OUTCOME, MARKERS["ndka"])
    assert ndka["auroc"] == round(0.611957994579946, 6)
    assert ndka["auroc_ci"] == [round(0.501244999271703, 6), round(0.722670989888189, 6)]
    assert ndka["auroc_se"] == round(0.0031908105493913 ** 0.5, 6)
    s100b = M.auroc_ci(OUTCOME, MARKERS["s100b"])
    assert [f"{x:.4f}" for x in s100b["auroc_ci"]] == ["0.6301", "0.8326"]


@pytest.mark.parametrize("a,b,z,p,low,high", [
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
    ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
])
def test_delong_paired_matches_proc_roc_test(a, b, z, p, low, high):
    auc_a, auc_b, var = M._delong_paired_raw(OUTCOME, MARKERS[a], MARKERS[b])
    assert (auc_a - auc_b) / math.sqrt(var) == pytest.approx(z, rel=1e-10)
    result = M.delong_paired(OUTCOME, MARKERS[a], MARKERS[b])
    assert result["p_value"] == pytest.approx(p, rel=1e-5)  # stats.p_value keeps 6 significant digits
    assert result["difference_ci"] == [round(low, 6), round(high, 6)]
    assert result["difference"] == round(auc_a - auc_b, 6)
    assert result["auroc_a"] == M.auroc_ci(OUTCOME, MARKERS[a])["auroc"]
    reverse = M.delong_paired(OUTCOME, MARKERS[b], MARKERS[a])
    assert reverse["p_value"] == result["p_value"] and reverse["difference"] == -result["difference"]


def test_delong_paired_identical_curves():
    same = M.delong_paired(OUTCOME, MARKERS["wfns"], MARKERS["wfns"])  # pROC: p = 1, Z = 0
    assert same["difference"] == 0.0 and same["p_value"] == 1.0 and same["difference_ci"] == [0.0, 0.0]
    # a monotone transform ranks the images identically: the same AUROC, no evidence of a difference
    squashed = M.delong_paired(OUTCOME, MARKERS["ndka"], 1 / (1 + np.exp(-MARKERS["ndka"] / 100)))
    assert squashed["difference"] == 0.0 and squashed["p_value"] == 1.0


# ---------------------------------------------------------------------------------------------------------
# scikit-learn and slow pairwise references
# ---------------------------------------------------------------------------------------------------------

def _problem(case: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 400
    truth = (rng.random(n) < (0.1 if case == "rare" else 0.4)).astype(int)
    score = 1 / (1 + np.exp(-(1.2 * truth + rng.normal(0, 1, n))))
    if case == "ties":
        score = np.round(score, 1)  # heavy ties: about ten distinct values
    elif case == "saturated":
        score = np.where(rng.random(n) < 0.3, 1.0, score)  # many sigmoid outputs saturated to exactly 1.0
        score[np.flatnonzero(truth == 0)[:5]] = 1.0  # some negatives among them for certain
    return truth, score


def _pairwise_components(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988)'s structural components from the full n_pos x n_neg kernel table."""
    pos, neg = score[truth == 1], score[truth == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def _pairwise_variance(truth, score) -> float:
    v10, v01 = _pairwise_components(truth, score)
    return float(np.var(v10, ddof=1) / v10.size + np.var(v01, ddof=1) / v01.size)


CASES = [(case, seed) for case in ("continuous", "ties", "saturated", "rare") for seed in (0, 1, 2)]


@pytest.mark.parametrize("case,seed", CASES)
def test_auroc_equals_sklearn(case, seed):
    truth, score = _problem(case, seed)
    auc, _ = M.delong(truth, score)
    assert abs(auc - roc_auc_score(truth, score)) < 1e-12


@pytest.mark.parametrize("case,seed", CASES)
def test_delong_variance_equals_pairwise_reference(case, seed):
    truth, score = _problem(case, seed)
    _, var = M.delong(truth, score)
    assert abs(var - _pairwise_variance(truth, score)) < 1e-12


def test_saturated_scores_tie_at_one():
    truth = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    score = np.array([1.0, 1.0, 0.7, 1.0, 0.2, 0.6, 0.9, 1.0])
    auc, var = M.delong(truth, score)
    # positives 1, 1, .7, .9 against negatives 1, .2, .6, 1: 2 * (2 + 2 * 1/2) + 2 + 2 = 10 of 16 pairs
    assert auc == pytest.approx(10 / 16, abs=1e-15) and auc == pytest.approx(roc_auc_score(truth, score))
    assert var == pytest.approx(_pairwise_variance(truth, score), abs=1e-15)


def test_delong_paired_equals_pairwise_reference():
    rng = np.random.default_rng(7)
    truth = (rng.random(250) < 0.35).astype(int)
    a = truth + rng.normal(0, 1, 250)
    b = 0.5 * a + np.round(rng.normal(0, 1, 250), 1)
    (a10, a01), (b10, b01) = _pairwise_components(truth, a), _pairwise_components(truth, b)
    s = np.cov([a10, b10]) / a10.size + np.cov([a01, b01]) / a01.size
    z = (a10.mean() - b10.mean()) / math.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    auc_a, auc_b, var = M._delong_paired_raw(truth, a, b)
    assert (auc_a - auc_b) / math.sqrt(var) == pytest.approx(z, rel=1e-12)
    assert M.delong_paired(truth, a, b)["p_value"] == pytest.approx(2 * norm.sf(abs(z)), rel=1e-5)


def test_delong_paired_detects_a_better_score():
    rng = np.random.default_rng(11)
    truth = (rng.random(300) < 0.4).astype(int)
    good = 1 / (1 + np.exp(-(2.0 * truth + rng.normal(0, 1, 300))))
    weak = 1 / (1 + np.exp(-(0.3 * truth + rng.normal(0, 1, 300))))
    result = M.delong_paired(truth, good, weak)
    assert result["p_value"] < 0.01
    assert result["difference"] > 0 and result["difference_ci"][0] > 0
    assert result["difference"] == pytest.approx(roc_auc_score(truth, good) - roc_auc_score(truth, weak),
                                                 abs=1e-6)


def test_undefined_auroc_is_none():
    assert M.delong([0, 0, 0], [0.1, 0.5, 0.9]) is None
    assert M.delong([1, 1], [0.1, 0.5]) is None
    assert M.auroc_ci([0, 0, 0], [0.1, 0.5, 0.9]) == {"auroc": None, "auroc_ci": None, "auroc_se": None}
    # one positive: the AUROC exists, DeLong's variance (a sample variance of one value) does not
    assert M.delong([1, 0, 0], [0.9, 0.5, 0.1]) == (1.0, None)
    assert M.auroc_ci([1, 0, 0], [0.9, 0.5, 0.1]) == {"auroc": 1.0, "auroc_ci": None, "auroc_se": None}
    assert M.delong_paired([0, 0], [0.1, 0.2], [0.3, 0.4]) == {
        "auroc_a": None, "auroc_b": None, "difference": None, "difference_ci": None, "p_value": None}
    # perfect separation: variance 0, the interval collapses onto 1 (as pROC's)
    assert M.auroc_ci([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == {"auroc": 1.0, "auroc_ci": [1.0, 1.0],
                                                               "auroc_se": 0.0}
    with pytest.raises(ValueError):
        M.delong([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        M.delong([0, 1], [0.1, float("nan")])


# ---------------------------------------------------------------------------------------------------------
# label metrics, averages, co-occurrence and confusions on a hand-made example
# ---------------------------------------------------------------------------------------------------------

NAMES = ["cat", "dog", "car"]
TRUTH = np.array([[1, 0, 0],
                  [1, 1, 0],
                  [0, 1, 0],
                  [0, 0, 0],
                  [1, 0, 0],
                  [0, 1, 0]])
DECISION = np.array([[1, 0, 0],
                     [0, 1, 1],
                     [0, 1, 0],
                     [1, 0, 0],
                     [1, 1, 0],
                     [0, 0, 0]], dtype=bool)
PROBABILITY = np.array([[0.9, 0.3, 0.1],
                        [0.4, 0.8, 0.6],
                        [0.2, 0.6, 0.0],
                        [0.7, 0.2, 0.05],
                        [0.8, 0.55, 0.2],
                        [0.1, 0.45, 0.3]])


def _wilson(k: int, n: int) -> list[float]:
    """Wilson (1927) score interval from its closed form."""
    z = norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [centre - half, centre + half]


def test_label_metrics_by_hand():
    rows = M.label_metrics(TRUTH, PROBABILITY, DECISION, NAMES, [0.5, 0.5, 0.25])
    assert [r["label"] for r in rows] == NAMES
    cat, dog, car = rows
    assert list(cat) == ["label", "threshold", "n", "n_positive", "prevalence", "auroc", "auroc_ci", "auroc_se",
                         "average_precision", "sensitivity", "sensitivity_ci", "specificity", "specificity_ci",
                         "precision", "predicted_positive", "ece", "brier"]
    # cat: positives rows 0, 1, 4 called 1, 0, 1; negatives rows 2, 3, 5 called 0, 1, 0
    assert (cat["n"], cat["n_positive"], cat["prevalence"], cat["predicted_positive"]) == (6, 3, 0.5, 3)
    assert cat["sensitivity"] == cat["specificity"] == cat["precision"] == round(2 / 3, 6)
    assert cat["sensitivity_ci"] == pytest.approx(_wilson(2, 3), abs=1e-6)
    assert cat["specificity_ci"] == pytest.approx(_wilson(2, 3), abs=1e-6)
    # positives .9, .4, .8 against negatives .2, .7, .1: 3 + 2 + 3 of 9 pairs
    assert cat["auroc"] == round(8 / 9, 6)
    # every probability in its own 1/15 bin: ECE = mean |truth - probability|
    assert cat["ece"] == round((0.1 + 0.6 + 0.2 + 0.7 + 0.2 + 0.1) / 6, 6)
    assert cat["brier"] == round((0.01 + 0.36 + 0.04 + 0.49 + 0.04 + 0.01) / 6, 6)
    # dog: positives rows 1, 2, 5 called 1, 1, 0; negatives rows 0, 3, 4 called 0, 0, 1
    assert (dog["sensitivity"], dog["specificity"], dog["precision"]) == (round(2 / 3, 6),) * 3
    assert dog["average_precision"] == round(average_precision_score(TRUTH[:, 1], PROBABILITY[:, 1]), 6)
    # car: no positives; its one call (row 1) is a false positive
    assert car["n_positive"] == 0 and car["prevalence"] == 0.0 and car["threshold"] == 0.25
    assert car["auroc"] is None and car["auroc_ci"] is None and car["auroc_se"] is None
    assert car["average_precision"] is None
    assert car["sensitivity"] is None and car["sensitivity_ci"] is None
    assert car["specificity"] == round(5 / 6, 6) and car["precision"] == 0.0 and car["predicted_positive"] == 1
    json.dumps(rows, allow_nan=False)


def test_label_metrics_precision_none_without_predictions_and_binned_ece():
    truth = np.array([[1], [0], [1], [0]])
    probability = np.array([[0.5], [0.5], [0.52], [0.48]])  # one 1/15 bin: |1/2 - 1/2| = 0
    (row,) = M.label_metrics(truth, probability, np.zeros((4, 1), bool), ["x"], [0.9])
    assert row["precision"] is None and row["predicted_positive"] == 0
    assert row["sensitivity"] == 0.0 and row["specificity"] == 1.0
    assert row["ece"] == 0.0
    (row,) = M.label_metrics(np.ones((4, 1), int), probability, np.ones((4, 1), bool), ["x"], [0.1])
    assert row["ece"] == 0.5 and row["specificity"] is None and row["auroc"] is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    truth = (rng.random((150, 3)) < [0.05, 0.3, 0.6]).astype(int)
    probability = np.round(1 / (1 + np.exp(-(truth + rng.normal(0, 1, truth.shape)))), 2)
    rows = M.label_metrics(truth, probability, probability > 0.5, ["a", "b", "c"], [0.5] * 3)
    for j, row in enumerate(rows):
        assert row["average_precision"] == round(average_precision_score(truth[:, j], probability[:, j]), 6)


def _multilabel(seed: int, n: int = 300, k: int = 5):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, k)) < np.linspace(0.1, 0.6, k)).astype(int)
    probability = 1 / (1 + np.exp(-(1.5 * truth - 0.8 + rng.normal(0, 1, (n, k)))))
    probability[rng.random((n, k)) < 0.1] = 1.0  # saturated outputs
    return truth, probability, probability >= 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_averages_against_sklearn(seed):
    truth, probability, decision = _multilabel(seed)
    per_label = M.label_metrics(truth, probability, decision, list("abcde"), [0.5] * 5)
    result = M.averages(truth, probability, decision, per_label)
    assert result["n_images"] == 300
    exact = int((decision == truth.astype(bool)).all(axis=1).sum())
    assert result["subset_accuracy"] == round(accuracy_score(truth, decision.astype(int)), 6) == round(exact / 300, 6)
    assert result["subset_accuracy_ci"] == wilson_ci(exact, 300)
    assert result["hamming_loss"] == round(hamming_loss(truth, decision.astype(int)), 6)
    assert result["micro"]["auroc"] == round(roc_auc_score(truth, probability, average="micro"), 6)
    assert result["micro"]["average_precision"] == round(
        average_precision_score(truth, probability, average="micro"), 6)
    assert result["macro"]["auroc"] == pytest.approx(roc_auc_score(truth, probability, average="macro"),
                                                     abs=1e-6)
    assert result["macro"]["average_precision"] == pytest.approx(
        average_precision_score(truth, probability, average="macro"), abs=1e-6)
    tp = (decision & (truth == 1)).sum()
    tn = (~decision & (truth == 0)).sum()
    assert result["micro"]["sensitivity"] == round(tp / truth.sum(), 6)
    assert result["micro"]["specificity"] == round(tn / (truth == 0).sum(), 6)
    assert result["macro"]["sensitivity"] == pytest.approx(
        np.mean([(decision[:, j] & (truth[:, j] == 1)).sum() / truth[:, j].sum() for j in range(5)]), abs=1e-6)
    json.dumps(result, allow_nan=False)


def test_averages_skip_undefined_labels():
    per_label = M.label_metrics(TRUTH, PROBABILITY, DECISION, NAMES, [0.5] * 3)
    result = M.averages(TRUTH, PROBABILITY, DECISION, per_label)
    # car has no AUROC, AP or sensitivity: the macro means run over cat and dog only
    assert result["macro"]["auroc"] == round((per_label[0]["auroc"] + per_label[1]["auroc"]) / 2, 6)
    assert result["macro"]["sensitivity"] == round(2 / 3, 6)
    assert result["macro"]["specificity"] == round((2 / 3 + 2 / 3 + 5 / 6) / 3, 6)
    # rows 0 and 2 have every decision right; wrong cells: 2 in row 1, 1 in rows 3, 4 and 5
    assert result["subset_accuracy"] == round(2 / 6, 6)
    assert result["hamming_loss"] == round(5 / 18, 6)
    empty = M.averages(np.zeros((0, 2), int), np.zeros((0, 2)), np.zeros((0, 2), bool), [])
    assert empty["macro"]["auroc"] is None and empty["subset_accuracy"] is None and empty["n_images"] == 0


def test_cooccurrence_by_hand():
    result = M.cooccurrence(TRUTH, NAMES)
    assert result == {"labels": NAMES, "counts": [[3, 1, 0], [1, 3, 0], [0, 0, 0]],
                      "images_without_label": 1, "mean_labels_per_image": 1.0}
    assert all(type(c) is int for row in result["counts"] for c in row)


def test_confused_pairs_by_hand():
    pairs = M.confused_pairs(TRUTH, DECISION, NAMES)
    # cat without dog: rows 0, 4, dog called on row 4 (1 of 2); cat without car: rows 0, 1, 4, car called on
    # row 1 (1 of 3); dog without car: rows 1, 2, 5, car on row 1 (1 of 3); dog without cat: rows 2, 5, no cat
    assert [(p["true"], p["predicted"], p["count"], p["n"]) for p in pairs] == [
        ("cat", "dog", 1, 2), ("cat", "car", 1, 3), ("dog", "car", 1, 3)]
    assert pairs[0]["share"] == 0.5 and pairs[0]["share_ci"] == wilson_ci(1, 2)
    assert pairs[1]["share"] == round(1 / 3, 6) and pairs[1]["share_ci"] == pytest.approx(_wilson(1, 3), abs=1e-6)
    assert M.confused_pairs(TRUTH, DECISION, NAMES, top=2) == pairs[:2]
    assert M.confused_pairs(TRUTH, TRUTH.astype(bool), NAMES) == []


def test_confused_pairs_ranks_by_interval_lower_end():
    # a -> b: 3 of 3 images (share 1, few images); c -> b: 30 of 40 (share .75, well supported)
    truth = np.zeros((43, 3), int)
    truth[:3, 0] = 1
    truth[3:, 2] = 1
    decision = truth.astype(bool).copy()
    decision[:3, 1] = True
    decision[3:33, 1] = True
    pairs = M.confused_pairs(truth, decision, ["a", "b", "c"])
    assert [(p["true"], p["predicted"], p["count"], p["n"]) for p in pairs] == [("c", "b", 30, 40), ("a", "b", 3, 3)]
    assert pairs[0]["share_ci"][0] > pairs[1]["share_ci"][0]


def test_group_auroc():
    rng = np.random.default_rng(5)
    n = 60
    truth = (rng.random(n) < 0.4).astype(int)
    score = truth + rng.normal(0, 1, n)
    groups = pd.Series(np.array(["north", "south", "east"], dtype=object)[rng.integers(0, 3, n)])
    groups[[0, 7]] = None
    groups[[3]] = np.nan
    groups[[10, 20]] = "tiny"
    truth[[10, 20]] = [0, 1]
    one_class = (groups == "east").to_numpy()
    truth[one_class] = 0
    rows = M.group_auroc(truth, score, groups, min_size=5)
    assert [r["group"] for r in rows] == ["east", "north", "south", "tiny"]
    assert sum(r["n"] for r in rows) == n - 3
    by = {r["group"]: r for r in rows}
    for g in ("north", "south"):
        mask = (groups == g).to_numpy()
        assert by[g]["n"] == mask.sum() and by[g]["n_positive"] == truth[mask].sum()
        assert by[g]["auroc"] == round(roc_auc_score(truth[mask], score[mask]), 6)
        assert by[g]["auroc_ci"] == M.auroc_ci(truth[mask], score[mask])["auroc_ci"]
    assert by["east"]["n_positive"] == 0 and by["east"]["auroc"] is None and by["east"]["auroc_ci"] is None
    assert by["tiny"]["n"] == 2 and by["tiny"]["auroc"] is None  # both classes, but under min_size
    assert list(by["north"]) == ["group", "n", "n_positive", "auroc", "auroc_ci"]
    # numeric group values come back as Python ints, sorted by their str()
    numeric = M.group_auroc(truth, score, np.where(np.arange(n) % 2, 10, 2), min_size=1)
    assert [r["group"] for r in numeric] == [10, 2] and type(numeric[0]["group"]) is int
    json.dumps(rows + numeric, allow_nan=False)

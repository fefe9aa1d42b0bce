"""Bias audit: planted deficits are found, random attributes are not, small groups are not ranked, the
per-group metrics equal fairlearn's, duplicates are found, and robustness is broken down by group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score, recall_score

import cnnaudit
from cnnaudit.bias.groups import gap, group_metrics, holm_verdicts
from cnnaudit.demo import write_image_folder

from .conftest import CLASSES, read_summary, run_cli


@pytest.fixture(scope="module")
def planted(tmp_path_factory, digits):
    """400 held-out digits; site C (25%) is photographed through heavy noise the model never saw."""
    x, y, meta = digits
    idx = np.arange(1300, 1700)
    x, y = x[idx].clone(), y[idx]
    rng = np.random.default_rng(1)
    site = rng.choice(["A", "B", "C"], size=len(y), p=[0.45, 0.30, 0.25])
    noisy = torch.from_numpy(site == "C")
    x[noisy] = (x[noisy] + 0.8 * torch.randn(x[noisy].shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    meta = pd.DataFrame({"site": site, "random_tag": rng.choice(["p", "q"], size=len(y)),
                         "rare": np.where(np.arange(len(y)) < 12, "tiny", "big")})
    root = tmp_path_factory.mktemp("planted") / "data"
    write_image_folder(root, x, y, meta, CLASSES)
    return root


@pytest.fixture(scope="module")
def planted_audit(eager_model, planted):
    return cnnaudit.audit(eager_model, planted, checks=["subgroups"])


def test_planted_deficit_is_found_and_significant(planted_audit):
    site = planted_audit.summary["subgroups"]["attributes"]["site"]
    acc = {g["value"]: g["accuracy"] for g in site["groups"]}
    assert acc["C"] < acc["A"] - 0.2 and acc["C"] < acc["B"] - 0.2, acc
    assert site["worst"] == "C" and site["significant"] and site["verdict"] == "significant"
    assert site["p_adjusted"] < 1e-6 and site["gap_ci"][0] > 0.1
    assert site["gap"] == pytest.approx(max(acc.values()) - acc["C"], abs=1e-6)
    gap = next(f for f in planted_audit.summary["findings"] if f["kind"] == "subgroup_gap")
    assert gap["subject"] == "site = C" and gap["severity"] == "fail" and gap["p_adjusted"] == site["p_adjusted"]
    # the coin-flip tag in the same audit is not called real
    assert not planted_audit.summary["subgroups"]["attributes"]["random_tag"]["significant"]


def test_small_group_is_insufficient_and_never_ranked(planted_audit):
    rare = planted_audit.summary["subgroups"]["attributes"]["rare"]
    tiny = next(g for g in rare["groups"] if g["value"] == "tiny")
    assert tiny["n"] == 12 and tiny["insufficient"]
    assert rare["verdict"] == "insufficient data" and rare["gap"] is None and rare["worst"] is None


def test_random_attribute_is_not_significant_in_95_percent_of_trials(planted_audit):
    clean = planted_audit.samples.query("condition == 'clean'").reset_index(drop=True)
    false_alarms = 0
    for trial in range(200):
        rows = clean.assign(tag=np.random.default_rng(trial).choice(["a", "b", "c"], size=len(clean)))
        entry = {**{"groups": (g := group_metrics(rows, "tag", CLASSES, 30))}, **gap(g, seed=trial)}
        holm_verdicts([entry])
        false_alarms += entry["significant"]
    assert false_alarms <= 10, false_alarms  # at most 5% of 200 seeded trials


def test_group_metrics_equal_fairlearn(planted_audit):
    clean = planted_audit.samples.query("condition == 'clean'")
    ours = {g["value"]: g for g in planted_audit.summary["subgroups"]["attributes"]["site"]["groups"]}
    metrics = {"accuracy": accuracy_score}
    for c in (0, 3, 7):
        metrics[f"tpr_{c}"] = lambda t, p, c=c: recall_score(t == c, p == c, zero_division=0)
        metrics[f"fpr_{c}"] = lambda t, p, c=c: float(((p == c) & (t != c)).sum() / max(1, (t != c).sum()))
    frame = MetricFrame(metrics=metrics, y_true=clean["label"].to_numpy(), y_pred=clean["prediction"].to_numpy(),
                        sensitive_features=clean["site"].astype(str).to_numpy())
    for value, row in frame.by_group.iterrows():
        assert ours[value]["accuracy"] == pytest.approx(row["accuracy"], abs=1e-6)
        for c in (0, 3, 7):
            assert ours[value]["per_class"][str(c)]["tpr"] == pytest.approx(row[f"tpr_{c}"], abs=1e-6)
            assert ours[value]["per_class"][str(c)]["fpr"] == pytest.approx(row[f"fpr_{c}"], abs=1e-6)
    assert planted_audit.summary["subgroups"]["attributes"]["site"]["gap"] == pytest.approx(
        frame.difference()["accuracy"], abs=1e-6)


def test_duplicates_and_association_found(tmp_path, eager_model, digits):
    x, y, _ = digits
    idx = np.arange(1000, 1120)
    xs, ys = x[idx].clone(), y[idx].copy()
    xs[10], ys[10] = xs[0], ys[0]  # exact copy, same label
    xs[11], ys[11] = xs[1], (ys[1] + 1) % 10  # exact copy, conflicting label
    xs[12], ys[12] = (xs[2] * 0.98 + 0.01).clamp(0, 1), ys[2]  # near copy
    # a "camera" attribute that is almost always class 0 when it is "X": a shortcut risk
    camera = np.where((ys == 0) | (np.arange(len(ys)) % 40 == 0), "X", "Y")
    root = tmp_path / "d"
    write_image_folder(root, xs, ys, pd.DataFrame({"camera": camera}), CLASSES)
    res = cnnaudit.audit(eager_model, root, checks=["subgroups"], subgroups={"min_group_size": 5})
    audit = res.summary["subgroups"]["data_audit"]
    d = audit["duplicates"]
    assert d["n_exact_groups"] == 2 and d["n_exact_images"] == 4 and d["n_conflicting"] >= 1
    near = sorted([f"{ys[2]}/00002.png", f"{ys[12]}/00012.png"])
    assert any(sorted(p["paths"]) == near for p in d["near"]), d["near"]
    rep = audit["representation"]["camera"]
    assert any(f["value"] == "X" and f["class"] == "0" for f in rep["flagged"]) and rep["cramers_v"] > 0.5
    assert sum(audit["class_balance"]["counts"].values()) == 120


def test_disparity_from_other_checks_rows(eager_model, planted):
    res = cnnaudit.audit(eager_model, planted, checks=["corruption", "subgroups"], limit=200,
                         corruption={"corruptions": ("low_light",), "severities": (1, 5)},
                         subgroups={"group_by": ("site",)})
    disp = res.summary["subgroups"]["disparity"]
    assert {(d["condition"], d["attribute"]) for d in disp} == {("low_light_1", "site"), ("low_light_5", "site")}
    rows = res.samples.query("condition == 'low_light_5'")
    entry = next(d for d in disp if d["condition"] == "low_light_5")
    for g in entry["groups"]:
        sel = rows[rows["site"] == g["value"]]
        assert g["n"] == len(sel) and g["accuracy"] == pytest.approx(sel["correct"].mean(), abs=1e-6)
    assert "Robustness disparity" in res.html()


def test_cli_group_options(tmp_path, torchscript_path, digits_dir):
    r = run_cli("run", torchscript_path, digits_dir, "--out", tmp_path / "o", "--checks", "subgroups",
                "--intersections", "scanner*ruler", "--min-group-size", "10", "--quiet")
    assert r.returncode == 0, r.stderr
    attrs = read_summary(tmp_path / "o")["subgroups"]["attributes"]
    assert set(attrs) == {"scanner", "ruler", "scanner×ruler"}
    assert any(g["value"] == "A × 1" for g in attrs["scanner×ruler"]["groups"])
    r = run_cli("run", torchscript_path, digits_dir, "--out", tmp_path / "b", "--group-by", "hospital")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "'hospital'" in r.stderr and "scanner" in r.stderr


def _groups(*pairs):
    """Group records as group_accuracy yields them, from (value, correct, n)."""
    return [{"value": v, "n": n, "accuracy": k / n, "insufficient": False} for v, k, n in pairs]


def test_the_gap_interval_covers_its_own_estimate():
    """Four groups of equal accuracy: the old max - min bootstrap said [2.5%, 25%] for a gap of 0."""
    g = gap(_groups(("a", 40, 50), ("b", 40, 50), ("c", 40, 50), ("d", 40, 50)), seed=0)
    assert g["gap"] == 0.0 and g["gap_ci"][0] < 0 < g["gap_ci"][1]
    assert g["ratio_ci"][0] <= 1.0 <= g["ratio_ci"][1]
    assert g["p_value"] == 1.0 and "6 pair(s)" in g["selection"]


def test_the_p_value_tests_the_pair_the_finding_names():
    """A 850/1000, B 800/1000, C 22/30: the finding says "C is 11.7 points below A"; C vs A alone has
    p = 0.116, so with the choice of the pair accounted for it is not significant (the smallest
    group-vs-rest test used to call it significant)."""
    g = gap(_groups(("A", 850, 1000), ("B", 800, 1000), ("C", 22, 30)), seed=0)
    assert (g["worst"], g["best"]) == ("C", "A") and abs(g["gap"] - 0.116667) < 1e-6
    from scipy.stats import fisher_exact
    alone = fisher_exact([[850, 150], [22, 8]]).pvalue
    assert abs(alone - 0.116) < 0.01 and g["p_value"] == pytest.approx(min(1.0, 3 * alone), abs=1e-6)
    entries = [{"attribute": "site", **g}]
    holm_verdicts(entries)
    assert entries[0]["verdict"] == "not significant"
    assert g["gap_ci"][0] < g["gap"] < g["gap_ci"][1]


def test_slices_keep_equal_values_together_and_skip_a_single_bin():
    from cnnaudit.bias.data_audit import SLICE_PROPERTIES, slices
    n = 400
    rows = pd.DataFrame({"sample_id": range(n), "correct": [True] * 300 + [False] * 100,
                         **{p: np.linspace(0, 1, n) for p in SLICE_PROPERTIES}})
    rows["width"] = [640.0] * 399 + [1024.0]  # ranks would have cut 640-640 quartiles by row order
    rows["height"] = [480.0] * 200 + [720.0] * 200
    out = slices(rows, 30)
    assert not [s for s in out if s["property"] == "width"]
    heights = [s for s in out if s["property"] == "height"]
    assert [(s["low"], s["high"], s["n"]) for s in heights] == [(480.0, 480.0, 200), (720.0, 720.0, 200)]


def test_disparity_compares_who_loses_more_not_who_was_worse_already(tmp_path, digits, eager_model):
    """Site B holds every image the model gets wrong clean and a random fifth of the others: B is worse
    on clean images, but under a corruption it keeps as many of its clean-correct images as A."""
    x, y, _ = digits
    idx = np.arange(1000, 1400)
    with torch.no_grad():
        right = (eager_model(x[idx]).argmax(dim=1).numpy() == y[idx])
    rng = np.random.default_rng(3)
    site = np.where(~right | (rng.random(len(idx)) < 0.2), "B", "A")
    root = tmp_path / "d"
    write_image_folder(root, x[idx], y[idx], pd.DataFrame({"site": site}), CLASSES)
    s = cnnaudit.audit(eager_model, root, checks=["corruption", "subgroups"],
                       corruption={"corruptions": ("low_light", "rain")}).summary["subgroups"]
    assert s["attributes"]["site"]["significant"] and s["attributes"]["site"]["worst"] == "B"  # worse clean
    entries = [d for d in s["disparity"] if d["attribute"] == "site"]
    assert len(entries) == 10 and all(d["measure"] == "kept_rate" for d in entries)
    assert not any(d["significant"] for d in entries), [(d["condition"], d["p_adjusted"]) for d in entries]
    # the accuracy under the condition still differs: that is the clean gap carried along
    assert all(g["accuracy"] < 0.9 for d in entries for g in d["groups"] if g["value"] == "B")


def test_metadata_named_like_internal_columns_is_renamed_and_blank_values_are_missing(tmp_path, digits_dir,
                                                                                        torchscript_path):
    import shutil
    root = tmp_path / "d"
    shutil.copytree(digits_dir, root)
    meta = pd.read_csv(root / "metadata.csv")
    meta["severity"] = np.where(np.arange(len(meta)) % 2, "high", "low")
    meta["contrast"] = np.where(np.arange(len(meta)) % 3, "x", "y")
    meta["site"] = np.where(np.arange(len(meta)) % 5 == 0, "", np.where(np.arange(len(meta)) % 2, "A", "B"))
    meta.to_csv(root / "metadata.csv", index=False)
    s = cnnaudit.audit(torchscript_path, root, checks=["corruption", "subgroups"], limit=120,
                       corruption={"corruptions": ("rain",), "severities": (1,)},
                       subgroups={"group_by": ("severity", "contrast", "site"), "min_group_size": 5}).summary
    assert s["errors"] == []
    assert s["data"]["renamed_columns"] == {"contrast": "meta_contrast", "severity": "meta_severity"}
    attrs = s["subgroups"]["attributes"]
    assert set(attrs) == {"meta_severity", "meta_contrast", "site"}
    assert {g["value"] for g in attrs["meta_severity"]["groups"]} == {"high", "low"}
    assert {g["value"] for g in attrs["site"]["groups"]} == {"A", "B"}  # blank is missing, not a group
    assert sum(g["n"] for g in attrs["site"]["groups"]) < 120


def test_the_rename_reports_only_what_it_renamed_and_never_collides(tmp_path):
    from PIL import Image

    from cnnaudit.data import open_dataset
    for c in "ab":
        (tmp_path / c).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / c / "x.png")
    pd.DataFrame({"path": ["a/x.png", "b/x.png"], "meta_width": ["p", "q"]}).to_csv(tmp_path / "metadata.csv",
                                                                                    index=False)
    assert open_dataset(tmp_path).renamed == {}  # the user's own meta_width was not renamed
    pd.DataFrame({"path": ["a/x.png", "b/x.png"], "meta_width": ["p", "q"], "width": [1, 2]}).to_csv(
        tmp_path / "metadata.csv", index=False)
    d = open_dataset(tmp_path)
    assert d.renamed == {"width": "meta_meta_width"}
    assert d.attributes == ["meta_width", "meta_meta_width"]
    assert list(d.table["meta_width"]) == ["p", "q"] and list(d.table["meta_meta_width"]) == [1, 2]

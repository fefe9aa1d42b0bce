"""Multi-label classifiers end to end: a CNN with three sigmoid outputs trained here on real digits (labels
`even`, `large`, `round` derived from each digit), with a planted flaw: site B's images carry a mark that
training taught the model to read as "not round" (tests/multilabel_zoo.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

import cnnaudit
from cnnaudit.config import AuditConfig
from cnnaudit.data import open_dataset
from cnnaudit.errors import AuditError
from cnnaudit.multilabel.thresholds import logit, read_thresholds
from tests import multilabel_zoo as mz
from tests.conftest import read_summary, run_cli

LIMIT = 300


@pytest.fixture(scope="module")
def split():
    return mz.images(seed=0)


@pytest.fixture(scope="module")
def model(split):
    x, y, site, train = split
    return mz.train_multilabel(x[train], mz.flawed_training_targets(y[train], site[train]))


@pytest.fixture(scope="module")
def files(tmp_path_factory, split, model):
    x, y, site, train = split
    root = tmp_path_factory.mktemp("multilabel")
    held = ~train
    data = mz.write_folder(root / "data", x[held], y[held], site[held])
    path = root / "model.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    return {"root": root, "data": data, "model": path}


@pytest.fixture(scope="module")
def audit(files):
    """The default checks (the shortcuts check told about the mark) on 300 of the held-out images."""
    return cnnaudit.audit(str(files["model"]), str(files["data"]), limit=LIMIT, seed=0,
                          shortcuts={"artifacts": ["mark"]})


# --- data --------------------------------------------------------------------------------------------------
def test_a_labels_column_and_label_columns_read_the_same_targets(tmp_path, split):
    x, y, site, _ = split
    a = open_dataset(mz.write_folder(tmp_path / "a", x[:40], y[:40], site[:40]))
    b = open_dataset(mz.write_folder(tmp_path / "b", x[:40], y[:40], site[:40], layout="columns"),
                     label_columns=mz.LABELS)
    assert a.task == b.task == "multilabel" and a.classes == b.classes == mz.LABELS
    expected = mz.targets(y[:40])  # paths img/0000.png ... sort in the order written
    assert (a.targets == expected).all() and (b.targets == expected).all()
    assert a.attributes == b.attributes == ["site", "mark", "mark_box"]
    one = a.label_view(mz.LABELS.index("round"))  # the label's two-class view
    assert one.classes == ["not round", "round"]
    assert (one.table["label"].to_numpy() == expected[:, 2]).all()
    # an image with no label: an empty cell; a 1 (digit one) is odd, small and not round
    assert a.table.loc[y[:40] == 1, "label_name"].eq("(none)").all()


def test_multilabel_data_errors_name_the_row_and_the_fix(tmp_path, split):
    x, y, site, _ = split
    root = mz.write_folder(tmp_path / "d", x[:10], y[:10], site[:10])
    meta = pd.read_csv(root / "metadata.csv", keep_default_na=False)
    meta.loc[3, "labels"] = "even|oval"
    meta.to_csv(root / "metadata.csv", index=False)
    with pytest.raises(AuditError, match=r"row 5: label 'oval' \(column 'labels'\) is not among the 3 labels"):
        open_dataset(root)
    cols = mz.write_folder(tmp_path / "c", x[:10], y[:10], site[:10], layout="columns")
    meta = pd.read_csv(cols / "metadata.csv")
    meta["large"] = meta["large"].astype(object)
    meta.loc[2, "large"] = "yes"
    meta.to_csv(cols / "metadata.csv", index=False)
    with pytest.raises(AuditError, match=r"row 4, column 'large' holds 'yes'; a label column holds 1"):
        open_dataset(cols, label_columns=mz.LABELS)
    with pytest.raises(AuditError, match="--label-columns names 'tall'"):
        open_dataset(cols, label_columns=["even", "tall"])
    # --task multilabel reads a 'label' column of label sets (an empty cell: no label)
    meta = pd.read_csv(root / "metadata.csv", keep_default_na=False).rename(columns={"labels": "label"})
    meta.loc[3, "label"] = "even"
    meta.to_csv(root / "metadata.csv", index=False)
    assert open_dataset(root, task="multilabel").targets.shape == (10, 3)


def test_one_source_of_labels_and_numeric_label_names(tmp_path, split):
    x, y, site, _ = split
    root = mz.write_folder(tmp_path / "d", x[:12], y[:12], site[:12])
    meta = pd.read_csv(root / "metadata.csv", keep_default_na=False)
    meta.assign(label="even").to_csv(root / "metadata.csv", index=False)
    with pytest.raises(AuditError, match="has a 'label' column and a 'labels' column; keep one source of labels"):
        open_dataset(root)
    assert "labels" in open_dataset(root, task="multiclass").attributes  # the old reading, asked for
    # numeric label names stay names (a blank cell is no label), ordered as numbers
    meta.assign(labels=["3|10", " ", "2", "10", "", "3", "2|3", "10", "2", "3", "10", "2"]).to_csv(
        root / "metadata.csv", index=False)
    (root / "classes.txt").unlink()
    d = open_dataset(root)
    assert d.classes == ["2", "3", "10"] and d.targets[0].tolist() == [0, 1, 1] and d.targets[1].sum() == 0


def test_thresholds_from_a_number_toml_or_csv(tmp_path):
    assert read_thresholds("0.3", mz.LABELS) == [0.3] * 3
    toml = tmp_path / "t.toml"
    toml.write_text("[thresholds]\neven = 0.4\nlarge = 0.5\nround = 0.25\n")
    assert read_thresholds(str(toml), mz.LABELS) == [0.4, 0.5, 0.25]
    csv = tmp_path / "t.csv"
    csv.write_text("label,threshold\nround,0.25\neven,0.4\nlarge,0.6\n")
    assert read_thresholds(str(csv), mz.LABELS) == [0.4, 0.6, 0.25]
    csv.write_text("label,threshold\nround,0.25\neven,0.4\n")
    with pytest.raises(AuditError, match="no threshold for label 'large'"):
        read_thresholds(str(csv), mz.LABELS)
    with pytest.raises(AuditError, match="strictly between 0 and 1"):
        read_thresholds("1.5", mz.LABELS)
    assert abs(logit(0.25) - np.log(1 / 3)) < 1e-12


# --- the audit ---------------------------------------------------------------------------------------------
def _outputs(files, paths: list[str], model) -> np.ndarray:
    """The model's raw outputs on the files, computed here without cnnaudit."""
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(files["data"] / p), dtype=np.float32) / 255.0)[None]
                     for p in paths])
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.slow
def test_per_label_auroc_equals_scikit_learn_on_the_models_own_outputs(audit, files, model):
    rows = next(r for r in audit.results if r.name == "multilabel").rows
    section = audit.summary["multilabel"]
    for k, name in enumerate(mz.LABELS):
        mine = rows[rows["target"] == name].sort_values("sample_id")
        scores = _outputs(files, list(mine["path"]), model)[:, k]
        assert np.allclose(mine["score"], scores, atol=1e-5)
        expected = roc_auc_score(mine["truth"], scores)
        got = next(r for r in section["per_label"] if r["label"] == name)
        assert abs(got["auroc"] - expected) < 1e-6, name
        lo, hi = got["auroc_ci"]
        assert lo < got["auroc"] < hi and hi - lo < 0.3
        # the decision at 0.5 is the sign of the logit, and the label's clean accuracy counts it
        decided = scores > 0
        assert (mine["decision"].to_numpy() == decided).mean() > 0.99
        clean = audit.summary["per_label"][name]["clean"]
        assert abs(clean["accuracy"] - (mine["decision"] == mine["truth"].astype(bool)).mean()) < 1e-6
    assert section["n_images"] == LIMIT and audit.summary["task"] == "multilabel"
    # subset accuracy and Hamming loss from the same rows
    wide = rows.pivot(index="sample_id", columns="target", values="correct")
    assert abs(section["subset_accuracy"] - wide.all(axis=1).mean()) < 1e-6
    assert abs(section["hamming_loss"] - (1 - wide.to_numpy().mean())) < 1e-6
    assert abs(audit.summary["clean"]["accuracy"] - (1 - section["hamming_loss"])) < 1e-6  # pooled decisions


@pytest.mark.slow
def test_the_planted_subgroup_gap_is_a_finding_that_names_the_one_label_it_hurts(audit):
    s = audit.summary
    sites = {name: s["per_label"][name]["subgroups"]["attributes"]["site"] for name in mz.LABELS}
    assert sites["round"]["significant"] and sites["round"]["worst"] == "B" and sites["round"]["gap"] > 0.2
    assert not sites["even"]["significant"] and not sites["large"]["significant"]
    gaps = [f for f in s["findings"] if f["kind"] == "subgroup_gap" and "site" in f["subject"]]
    assert [(f["label"], f["subject"]) for f in gaps] == [("round", "round: site = B")]
    assert gaps[0]["id"] == "subgroups/subgroup_gap/site=B@round"  # a waiver names the label
    assert all(f["id"].endswith("@" + f["label"]) for f in s["findings"] if "label" in f), [(f["id"], f["label"]) for f in s["findings"] if "label" in f and not f["id"].endswith("@" + f["label"])]
    assert len({f["id"] for f in s["findings"]}) == len(s["findings"])
    assert gaps[0]["title"].startswith("round: Accuracy differs by site") and gaps[0]["evidence"] == "#label-round"
    # one Holm family over labels x attributes (site is the one attribute compared; the mark is an artifact):
    # the smallest of the three p-values is multiplied by 3, where each label's family alone would leave it
    n_tests = sum(e["p_value"] is not None for name in mz.LABELS
                  for e in s["per_label"][name]["subgroups"]["attributes"].values())
    assert n_tests == 3
    assert sites["round"]["p_adjusted"] == pytest.approx(min(1.0, 3 * sites["round"]["p_value"]), rel=1e-5)
    # the mark is a shortcut for round alone (pasting it on other images pushes them to 'not round')
    verdicts = {n: s["per_label"][n]["shortcuts"]["artifacts"]["mark"]["verdict"] for n in mz.LABELS}
    assert verdicts["round"] == "shortcut" and verdicts["even"] != "shortcut" and verdicts["large"] != "shortcut"
    sens = [f for f in s["findings"] if f["kind"] == "sensitivity_gap"]  # the part of the gap that misses 'round'
    assert [(f["label"], f["subject"]) for f in sens] == [("round", "round: site = B")]
    entry = next(e for e in s["multilabel"]["sensitivity_gaps"] if e["label"] == "round")
    assert entry["gap"] > sites["round"]["gap"]  # sensitivity falls more than accuracy, which negatives dilute
    weak = [f for f in s["findings"] if f["kind"] == "weak_label"]
    assert weak and all(f["subject"] == "round" and f["label"] == "round" for f in weak)
    # every finding of a label's checks names it
    for f in s["findings"]:
        if f["check"] != "multilabel" and f.get("label"):
            assert f["subject"].startswith(f["label"] + ": ")
    assert all("label" in f for f in s["findings"])


@pytest.mark.slow
def test_label_set_attack_is_the_worst_case_of_the_label_attacks(audit):
    s = audit.summary
    clean_rows = {r.name: r for r in audit.per_label["even"]}["clean"].rows
    assert len(clean_rows) == LIMIT
    for entry in s["multilabel"]["label_set_robustness"]:
        per_label = []
        ok = pd.Series(True, index=clean_rows["sample_id"])
        for name in mz.LABELS:
            rows = {r.name: r for r in audit.per_label[name]}
            adv = rows["adversarial"].rows
            adv = adv[adv["condition"] == entry["condition"]].set_index("sample_id")["correct"].astype(bool)
            clean = rows["clean"].rows.set_index("sample_id")["correct"].astype(bool)
            per_label.append(adv.mean())
            ok &= clean.reindex(ok.index, fill_value=False) & adv.reindex(ok.index, fill_value=False)
        assert abs(entry["robust_subset_accuracy"] - ok.mean()) < 1e-6
        assert entry["robust_subset_accuracy"] <= min(per_label) + 1e-9
        assert entry["labels_attacked"] == mz.LABELS


@pytest.mark.slow
def test_outputs_summary_schema_samples_and_report(audit, tmp_path):
    paths = audit.write(tmp_path / "out")
    summary = read_summary(tmp_path / "out")  # validated against the published schema
    assert set(summary["per_label"]) == set(mz.LABELS)
    assert summary["multilabel"]["shared_passes"]["forward_hits"] > 0
    samples = pd.read_csv(paths["samples"], low_memory=False)
    clean = samples[samples["check"] == "clean"]
    assert sorted(clean["target"].unique()) == sorted(mz.LABELS) and len(clean) == 3 * LIMIT
    html = paths["report"].read_text()
    for name in mz.LABELS:
        assert f'id="label-{name}"' in html and f'id="label-{name}-subgroups"' in html
    assert 'class="label-nav"' in html and "Per-label performance" in html
    from cnnaudit.gate import judge, load_policy  # the shipped example policy judges this audit
    verdict = judge(load_policy(Path(__file__).resolve().parents[1] / "examples" / "multilabel-gate.toml"), summary)
    rules = {r["name"]: r for r in verdict["rules"]}
    assert rules["round is found"]["label"] == "round" and not rules["ranking per label"]["passed"]
    assert rules["site gap, any label"]["label"] == "round" and not rules["site gap, any label"]["passed"]
    card = audit.model_card()
    assert "### Per label" in card and "| round |" in card and "AUROC" in card


@pytest.mark.slow
def test_a_labels_audit_shares_forward_passes_and_decoded_batches(files):
    """Clean and corruption of three labels: each batch reaches the model once; the other labels read it."""
    r = cnnaudit.audit(str(files["model"]), str(files["data"]), limit=120, seed=0, checks=["corruption"],
                       corruption={"corruptions": ["low_light", "fog"], "severities": [2, 4]})
    shared = r.summary["multilabel"]["shared_passes"]
    # batches of 64: clean 2, four corruption conditions 8, the joint pass 2 (all hits), probes
    assert shared["shared"] and shared["forward_hits"] >= 2 * shared["forward_misses"] - 6
    # the labels' clean and corruption passes decode each image once (what differs per label, e.g. a gallery of
    # its errors, is decoded for it)
    assert shared["images_reused"] >= 2 * 2 * 120 and shared["images_decoded"] < 1.5 * 2 * 120


# --- a single-label twin -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_label_audits_exactly_like_its_single_label_twin(tmp_path, split, model):
    """The 'round' output at threshold 0.3, exported as its own one-logit model and audited on the same images
    as a two-class folder, gives the same clean, adversarial and corruption results as the label in the
    multi-label audit."""
    x, y, site, train = split
    idx = np.flatnonzero(~train)[:150]
    data = mz.write_folder(tmp_path / "ml", x[idx], y[idx], site[idx])
    twin_data = mz.write_twin_folder(tmp_path / "twin", x[idx], y[idx], site[idx], "round")
    k = mz.LABELS.index("round")
    twin_path, path = tmp_path / "twin.pt", tmp_path / "ml.pt"
    torch.jit.save(torch.jit.script(mz.LabelOf(model, k, logit(0.3))), str(twin_path))
    torch.jit.save(torch.jit.script(model), str(path))
    (tmp_path / "t.toml").write_text("even = 0.5\nlarge = 0.5\nround = 0.3\n")
    options = dict(seed=0, checks=["adversarial", "corruption"], adversarial={"norms": ["linf"], "eps": {"linf": [2 / 255, 8 / 255]}},
                   corruption={"corruptions": ["fog", "low_light"], "severities": [3]})
    twin = cnnaudit.audit(str(twin_path), str(twin_data), **options)
    ml = cnnaudit.audit(str(path), str(data), threshold=str(tmp_path / "t.toml"), attack_labels=["round"], **options)
    mine = ml.summary["per_label"]["round"]
    assert twin.summary["model"]["output_values"] == "single_logit"
    for key in ("accuracy", "accuracy_ci", "per_class", "confusion_matrix"):
        assert mine["clean"][key] == twin.summary["clean"][key], key
    assert mine["adversarial"]["results"] == twin.summary["adversarial"]["results"]
    assert mine["corruption"]["results"] == twin.summary["corruption"]["results"]
    assert list(ml.summary["per_label"]["even"]) == ["clean", "corruption"]  # --labels: attacks on round only
    assert ml.summary["multilabel"]["labels_attacked"] == ["round"]
    assert all(e["upper_bound"] for e in ml.summary["multilabel"]["label_set_robustness"])
    # a gate rule on the attacks: the labels --labels left out have no evidence, so it cannot pass on them
    from cnnaudit.gate import judge
    from cnnaudit.gate.plan import check_plan
    from cnnaudit.gate.policy import parse_policy
    rule = {"kind": "min_robust_accuracy", "norm": "linf", "eps": "2/255", "threshold": 0.0}
    every, only = judge(parse_policy({"rule": [rule, {**rule, "label": "round"}]}), ml.summary)["rules"]
    assert not every["passed"] and "did not run on label 'even' (--labels)" in every["detail"]
    assert only["passed"] and only["label"] == "round"
    with pytest.raises(AuditError, match="judges the attacks on label 'even', which --labels leaves out"):
        check_plan(parse_policy({"rule": [{**rule, "label": "even"}]}), AuditConfig(attack_labels=["round"]), None,
                   [], labels=mz.LABELS)


# --- probabilities --------------------------------------------------------------------------------------------
class Sigmoid(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.sigmoid(self.inner(x))


def test_sigmoid_probabilities_are_read_as_such_and_decide_like_the_logits(files, model):
    a = cnnaudit.audit(model, str(files["data"]), limit=100, seed=0, checks=[])
    b = cnnaudit.audit(Sigmoid(model), str(files["data"]), limit=100, seed=0, checks=[])
    assert a.summary["model"]["output_values"] == "logits" and b.summary["model"]["output_values"] == "probabilities"
    for ra, rb in zip(a.summary["multilabel"]["per_label"], b.summary["multilabel"]["per_label"]):
        assert ra["sensitivity"] == rb["sensitivity"] and ra["specificity"] == rb["specificity"]
        assert abs(ra["auroc"] - rb["auroc"]) < 1e-3  # sigmoid in float32 ties a few saturated scores
    with pytest.raises(AuditError, match="--output-kind single_logit does not apply to a multi-label model"):
        cnnaudit.audit(model, str(files["data"]), limit=20, checks=[], output_kind="single_logit")


# --- gate and compare ------------------------------------------------------------------------------------------
def test_gate_rules_per_label_from_the_cli(files, tmp_path):
    policy = tmp_path / "gate.toml"
    policy.write_text('[[rule]]\nname = "auroc"\nkind = "min_auroc"\nthreshold = 0.9\n'
                      '[[rule]]\nname = "round found"\nkind = "min_sensitivity"\nlabel = "round"\nthreshold = 0.5\n'
                      '[[rule]]\nname = "even accuracy"\nkind = "min_clean_accuracy"\nlabel = "even"\nthreshold = 0.8\n'
                      '[[rule]]\nname = "every label"\nkind = "min_clean_accuracy"\nthreshold = 0.9\n')
    out = tmp_path / "out"
    r = run_cli("run", files["model"], files["data"], "--limit", "150", "--checks", "none", "--policy", policy,
                "--out", out, "--quiet")
    assert r.returncode == 1, r.stderr
    gate = read_summary(out)["gate"]
    rules = {g["name"]: g for g in gate["rules"]}
    assert not rules["auroc"]["passed"] and rules["auroc"]["metric"] == "multilabel.auroc.round"
    assert rules["round found"]["passed"] and rules["even accuracy"]["passed"]
    assert rules["even accuracy"]["label"] == "even" and rules["even accuracy"]["metric"] == "even: clean.accuracy"
    worst = min(read_summary(out)["per_label"].items(), key=lambda kv: kv[1]["clean"]["accuracy"])
    assert rules["every label"]["label"] == worst[0] and not rules["every label"]["passed"]
    # a label the data does not have, and a label rule on single-label data: exit 2 before the audit
    policy.write_text('[[rule]]\nkind = "min_clean_accuracy"\nlabel = "oval"\nthreshold = 0.5\n')
    r = run_cli("run", files["model"], files["data"], "--checks", "none", "--policy", policy, "--out", out)
    assert r.returncode == 2 and "names label 'oval', which the data does not have" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_compare_pairs_each_label(files, split, tmp_path):
    x, y, site, train = split
    other = mz.train_multilabel(x[train], mz.targets(y[train]), epochs=6, seed=1)  # no planted flaw
    path = tmp_path / "fixed.pt"
    torch.jit.save(torch.jit.script(other), str(path))
    c = cnnaudit.compare(str(files["model"]), str(path), str(files["data"]), limit=200, seed=0,
                         checks=["subgroups"])
    rows = c.comparison["conditions"]
    assert {r["label"] for r in rows} == set(mz.LABELS)
    site_b = next(r for r in rows if r["label"] == "round" and r["condition"] == "site = B")
    assert site_b["delta"] > 0.2 and site_b["significant"]  # the fixed model finds round on site B
    assert all(r["label"] for r in c.comparison["improvements"])
    paths = c.write(tmp_path / "cmp")
    assert "round: subgroups" in paths["report"].read_text()
    from cnnaudit.gate import judge
    from cnnaudit.gate.policy import parse_policy
    rules = parse_policy({"rule": [
        {"name": "significant", "kind": "max_regression", "paired": True, "label": "round", "threshold": 0.02,
         "only_significant": True},
        {"name": "any", "kind": "max_regression", "paired": True, "label": "round", "threshold": 0.02}]})
    verdict = judge(rules, c.candidate.summary, comparison=json.loads(paths["comparison"].read_text()))
    significant, any_drop = verdict["rules"]
    assert significant["passed"] and significant["label"] == "round"
    # without only_significant, the round label's own largest drop decides (its 'not round' images here)
    round_rows = [r for r in rows if r["label"] == "round" and r["delta"] is not None]
    assert any_drop["value"] == pytest.approx(-min(r["delta"] for r in round_rows))
    assert any_drop["passed"] == (any_drop["value"] <= 0.02)


class DictOut(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return {"logits": self.inner(x), "features": x.mean()}


def test_flags_from_the_cli_label_columns_thresholds_and_labels(files, split, tmp_path):
    x, y, site, train = split
    held = np.flatnonzero(~train)[:80]
    data = mz.write_folder(tmp_path / "cols", x[held], y[held], site[held], layout="columns")
    (tmp_path / "t.csv").write_text("label,threshold\neven,0.4\nlarge,0.6\nround,0.3\n")
    out = tmp_path / "out"
    base = ["run", files["model"], data, "--label-columns", "even,large,round", "--threshold", tmp_path / "t.csv",
            "--checks", "none", "--out", out, "--quiet"]
    r = run_cli(*base, "--labels", "oval")
    assert r.returncode == 2 and "--labels names 'oval', which is not one of the labels" in r.stderr
    r = run_cli(*base[:5], "--threshold", "1.2", *base[7:])
    assert r.returncode == 2 and "strictly between 0 and 1" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(*base)
    assert r.returncode == 0, r.stderr
    s = read_summary(out)
    assert s["multilabel"]["thresholds"] == {"even": 0.4, "large": 0.6, "round": 0.3}
    assert s["config"]["label_columns"] == mz.LABELS and s["data"]["attributes"] == ["site", "mark", "mark_box"]
    # the decision is the probability above the label's own threshold
    rows = pd.read_csv(out / "samples.csv", low_memory=False)
    rows = rows[rows["check"] == "multilabel"]
    for name, t in s["multilabel"]["thresholds"].items():
        mine = rows[rows["target"] == name]
        assert ((mine["probability"] > t) == mine["decision"].astype(str).eq("True")).all()


def test_containers_and_a_model_with_the_wrong_number_of_outputs(files, model):
    a = cnnaudit.audit(model, str(files["data"]), limit=60, seed=0, checks=[])
    b = cnnaudit.audit(DictOut(model), str(files["data"]), limit=60, seed=0, checks=[])
    assert a.summary["multilabel"]["per_label"] == b.summary["multilabel"]["per_label"]
    from cnnaudit.demo import DigitsCNN
    with pytest.raises(AuditError, match="has 10 outputs but the data has 3 labels"):
        cnnaudit.audit(DigitsCNN(num_classes=10), str(files["data"]), limit=20, checks=[])


@pytest.mark.slow
def test_query_only_and_training_set_per_label(files, split, model, tmp_path):
    """Under --query-only each label is attacked by Square alone; --train-data (multi-label too) gives every
    label its training-set audit."""
    x, y, site, train = split
    idx = np.flatnonzero(train)[:200]
    train_data = mz.write_folder(tmp_path / "train", x[idx], y[idx], site[idx])
    r = cnnaudit.audit(model, str(files["data"]), limit=40, seed=0, query_only=True, train_data=str(train_data),
                       checks=["adversarial", "training"], attack_labels=["round"],
                       adversarial={"norms": ["linf"], "eps": {"linf": [8 / 255]}})
    s = r.summary
    adv = s["per_label"]["round"]["adversarial"]
    assert adv["threat_model"] == "query_only" and adv["gradient_masking"] == "not_applicable" and adv["results"]
    assert all("training" in s["per_label"][n] for n in mz.LABELS) and "adversarial" not in s["per_label"]["even"]
    assert s["model"]["queries"]["images"] > 0
    single = tmp_path / "single"
    single.mkdir()
    with pytest.raises(AuditError, match="is multiclass data but DATA is multilabel"):
        from cnnaudit.demo import write_image_folder
        write_image_folder(single, x[:20], y[:20], pd.DataFrame({"site": site[:20]}), [str(i) for i in range(10)])
        cnnaudit.audit(model, str(files["data"]), limit=20, train_data=str(single), checks=["training"])

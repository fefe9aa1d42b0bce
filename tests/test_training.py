"""The training-set audit (--train-data) and label issues: leakage found (exact, re-encoded and shifted
copies, shared group identifiers) without false alarms, under-represented groups named with their
accuracy, out-of-distribution images, and confident learning cross-checked against cleanlab."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import cnnaudit
from cnnaudit.bias.label_issues import find_label_issues
from cnnaudit.demo import train_model, wash_out, write_image_folder
from cnnaudit.errors import AuditError
from tests.conftest import CLASSES, read_summary, run_cli


def _png(img: np.ndarray, path, *, jpeg=False, shift=0):
    img = np.roll(img, shift, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, **({"format": "JPEG", "quality": 75} if jpeg else {"format": "PNG"}))


@pytest.fixture(scope="module")
def splits(digits, tmp_path_factory):
    """Training: 1,000 digits, 2.4% of them from a washed-out scanner B; evaluation: 300 other digits, 37%
    from scanner B, plus 10 leaked training images (5 exact copies, 5 re-encoded as JPEG and shifted by a
    pixel) and 5 evaluation images re-encoded and shifted into training, a patient id shared with training
    on 4 images, and 20 inverted digits (like nothing in
    training). The model trained on the training split."""
    x, y, _ = digits
    rng = np.random.default_rng(7)
    tx, ty = x[:1000].clone(), y[:1000]
    t_b = rng.random(1000) < 0.024
    tx[torch.from_numpy(t_b)] = wash_out(tx[torch.from_numpy(t_b)])
    ex, ey = x[1000:1300].clone(), y[1000:1300]
    e_b = rng.random(300) < 0.37
    ex[torch.from_numpy(e_b)] = wash_out(ex[torch.from_numpy(e_b)])
    root = tmp_path_factory.mktemp("splits")
    t_meta = pd.DataFrame({"scanner": np.where(t_b, "B", "A"), "patient": [f"t{i}" for i in range(1000)]})
    e_meta = pd.DataFrame({"scanner": np.where(e_b, "B", "A"),
                           "patient": [f"t{i}" if i < 4 else f"e{i}" for i in range(300)]})
    write_image_folder(root / "train", tx, ty, t_meta, CLASSES)
    write_image_folder(root / "eval", ex, ey, e_meta, CLASSES)
    meta = pd.read_csv(root / "eval" / "metadata.csv")
    leaked = []
    for k in range(10):
        img = (tx[k][0].numpy() * 255 + 0.5).astype(np.uint8)
        name = f"{ty[k]}/leak{k}.{'png' if k < 5 else 'jpg'}"
        _png(img, root / "eval" / name, jpeg=k >= 5, shift=0 if k < 5 else 1)
        meta.loc[len(meta)] = {"path": name, "scanner": "A", "patient": f"x{k}"}
        leaked.append((name, f"{ty[k]}/{k:05d}.png", "exact" if k < 5 else "near"))
    train_meta = pd.read_csv(root / "train" / "metadata.csv")
    for k in range(20, 25):  # and the other way: evaluation images re-encoded, shifted and put into training
        img = (ex[k][0].numpy() * 255 + 0.5).astype(np.uint8)
        name = f"{ey[k]}/from_eval{k}.jpg"
        _png(img, root / "train" / name, jpeg=True, shift=1)
        train_meta.loc[len(train_meta)] = {"path": name, "scanner": "B" if e_b[k] else "A", "patient": f"f{k}"}
        leaked.append((f"{ey[k]}/{k:05d}.png", name, "near"))
    train_meta.to_csv(root / "train" / "metadata.csv", index=False)
    for k in range(20):  # images like nothing in training: inverted digits (white background)
        img = 255 - (ex[k][0].numpy() * 255 + 0.5).astype(np.uint8)
        _png(img, root / "eval" / f"{ey[k]}/inverted{k}.png")
        meta.loc[len(meta)] = {"path": f"{ey[k]}/inverted{k}.png", "scanner": "A", "patient": f"i{k}"}
    meta.to_csv(root / "eval" / "metadata.csv", index=False)
    model = train_model(tx, ty, epochs=4)
    shares = {"train": float((train_meta["scanner"] == "B").mean()), "eval": float(e_b.sum() / len(meta))}
    return root, model, leaked, shares


@pytest.fixture(scope="module")
def audited(splits):
    root, model = splits[:2]
    return cnnaudit.audit(model, root / "eval", train_data=root / "train", checks=["training", "label_issues"],
                          training={"group_id": "patient"})


def test_leakage_is_found_exactly(splits, audited):
    leaked = splits[2]
    t = audited.summary["training"]
    found = {(p["eval_path"], p["train_path"], p["kind"]) for p in t["leakage"] if p["kind"] != "group"}
    assert found == set(leaked)  # every copy, re-encoded and shifted ones included, and nothing else
    assert all(p["distance"] < 0.1 for p in t["leakage"] if p["kind"] == "near")
    groups = [p for p in t["leakage"] if p["kind"] == "group"]
    assert sorted(p["group"] for p in groups) == ["t0", "t1", "t2", "t3"]
    c = t["leakage_counts"]
    assert (c["exact"], c["near"], c["group"], c["n_eval_leaked"]) == (5, 10, 4, 19)
    rows = audited.samples.query("check == 'training'")
    assert int(rows["leaked"].sum()) == 19 and set(rows.loc[rows["leaked"], "leak_kind"]) == {"exact", "near", "group"}
    assert c["accuracy_leaked"] is not None and c["accuracy_not_leaked"] is not None
    leak = next(f for f in audited.summary["findings"] if f["subject"] == "leakage")
    assert leak["severity"] == "fail" and leak["title"].startswith("19 evaluation image(s) also appear in training")


def test_an_under_represented_group_is_named_with_its_accuracy(splits, audited):
    shares = splits[3]
    b = next(e for e in audited.summary["training"]["representation"]["scanner"] if e["value"] == "B")
    assert b["under_represented"] and b["train_share"] == pytest.approx(shares["train"], abs=1e-6)
    assert b["eval_share"] == pytest.approx(shares["eval"], abs=1e-6) and shares["train"] < 0.05 < 0.3 < shares["eval"]
    assert b["eval_accuracy"] < b["rest_accuracy"] - 0.1 and b["p_adjusted"] < 0.05
    finding = next(f for f in audited.summary["findings"] if f["subject"] == "scanner = B")
    assert f"scanner B is {100 * b['train_share']:.1f}% of training and {100 * b['eval_share']:.1f}% of evaluation" \
        in finding["title"]
    balance = audited.summary["training"]["class_balance"]
    assert sum(r["train_n"] for r in balance) == 1005 and [r["class"] for r in balance] == CLASSES


def test_out_of_distribution_images_are_the_far_ones(audited):
    ood = audited.summary["training"]["ood"]
    rows = audited.samples.query("check == 'training'")
    assert ood["n_far"] == int(rows["far"].sum()) and ood["threshold"] > 0
    # the inverted digits look like nothing in training: nearly all are far, and the model fails on them
    inverted = rows["path"].str.contains("inverted")
    assert rows.loc[inverted, "far"].mean() >= 0.9 and ood["accuracy_far"] < ood["accuracy_near"] - 0.2
    assert rows.loc[~inverted, "far"].mean() < 0.15  # about the 5% expected by chance among the others
    assert rows.loc[inverted, "ood_distance"].min() > rows.loc[~inverted, "ood_distance"].median()
    finding = next(f for f in audited.summary["findings"] if f["subject"] == "out-of-distribution")
    assert finding["p_adjusted"] < 0.05 and finding["sample_ids"]


def test_label_issues_match_cleanlab_and_find_planted_errors(digits, tmp_path, eager_model):
    cleanlab = pytest.importorskip("cleanlab.filter")  # AGPL-3.0: a test-only cross-check, never imported at run time
    rng = np.random.default_rng(0)
    n, k = 2000, 7
    logits = rng.normal(size=(n, k)) * 2
    labels = logits.argmax(1)
    noisy = rng.random(n) < 0.1
    labels[noisy] = rng.integers(0, k, noisy.sum())
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mine = find_label_issues(labels, probs)[0]
    assert (mine == cleanlab.find_label_issues(labels, probs, filter_by="confident_learning")).all()
    # 15 planted label errors among real digits: most are flagged, and clean accuracy is kept beside
    root = tmp_path / "data"
    x, y, meta = digits
    idx = np.arange(1000, 1300)
    wrong = y[idx].copy()
    planted = rng.choice(300, 15, replace=False)
    wrong[planted] = (wrong[planted] + 1 + rng.integers(0, 9, 15)) % 10
    write_image_folder(root, x[idx], wrong, meta.iloc[idx].reset_index(drop=True), CLASSES)
    s = cnnaudit.audit(eager_model, root, checks=["label_issues"]).summary
    li = s["label_issues"]
    flagged = {i["path"] for i in li["issues"]}
    planted_paths = {f"{CLASSES[wrong[i]]}/{i:05d}.png" for i in planted}
    assert len(flagged & planted_paths) >= 11, (len(flagged & planted_paths), li["n_flagged"])
    assert li["share_flagged"] < 0.12  # mostly the planted ones: a small share of the data
    assert li["accuracy_excluding_flagged"] > s["clean"]["accuracy"]  # a sensitivity line, clean kept as is
    assert li["issues"] == sorted(li["issues"], key=lambda i: i["score"])


@pytest.mark.slow
def test_the_command_line(splits, tmp_path):
    root, model = splits[:2]
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    out = tmp_path / "out"
    r = run_cli("run", path, root / "eval", "--train-data", root / "train", "--group-id", "patient", "--out", out,
                "--checks", "training", "--quiet")
    assert r.returncode == 0, r.stderr
    s = read_summary(out)
    assert s["training"]["leakage_counts"]["n_eval_leaked"] == 19 and s["config"]["train_data"] == str(root / "train")
    assert '<h3 id="training-leakage">' in (out / "report.html").read_text()
    # the training check without training data, and a training set with other classes: one clear error each
    r = run_cli("run", path, root / "eval", "--checks", "training", "--out", tmp_path / "o2")
    assert r.returncode == 2 and "the training check needs --train-data DIR" in r.stderr
    other = tmp_path / "other"
    (other / "cat").mkdir(parents=True)
    _png(np.zeros((32, 32), np.uint8), other / "cat" / "a.png")
    r = run_cli("run", path, root / "eval", "--train-data", other, "--out", tmp_path / "o3")
    assert r.returncode == 2 and "--train-data" in r.stderr and "classes.txt" in r.stderr
    # --train-eval adds training accuracy; --label-issues train checks the training labels, with its caveat
    r = run_cli("run", path, root / "eval", "--train-data", root / "train", "--train-eval", "--label-issues", "train",
                "--checks", "training,label_issues", "--out", tmp_path / "o4", "--quiet")
    assert r.returncode == 0, r.stderr
    s = read_summary(tmp_path / "o4")
    t, li = s["training"], s["label_issues"]
    assert t["train_accuracy"]["n"] == 1005 and t["generalization_gap"] == pytest.approx(
        t["train_accuracy"]["accuracy"] - s["clean"]["accuracy"], abs=1e-5)
    assert li["split"] == "train" and li["n"] == 1005 and "in-sample" in li["caveat"]
    r = run_cli("run", path, root / "eval", "--label-issues", "train", "--out", tmp_path / "o5")
    assert r.returncode == 2 and "--label-issues has 'train': checking training labels needs --train-data" in r.stderr
    # without --train-data the default run leaves the training check out, and says nothing is missing
    with pytest.raises(AuditError, match="the training check needs --train-data"):
        cnnaudit.audit(model, root / "eval", checks=["training"])
    assert "training" not in cnnaudit.audit(model, root / "eval", checks=None, limit=30,
                                            adversarial={"attacks": ["fgsm"]}).summary

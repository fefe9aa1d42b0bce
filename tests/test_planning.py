"""--budget and --plan (cnnaudit/planning.py): the allocation, the nested stratified order, and audits that
use a plan and replay it. Wall time against the budget is measured by benchmarks/bench_budget.py, not here."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import cnnaudit
from cnnaudit.errors import AuditError
from cnnaudit.planning import allocate, order
from tests.conftest import read_summary, run_cli


def test_allocation_spends_the_time_where_precision_is_cheapest():
    costs = {"adversarial": 1.0, "corruption": 0.02, "shift": 0.01}
    n = allocate(costs, 300.0, 10_000)
    spent = sum(costs[k] * n[k] for k in n)
    assert 295 <= spent <= 300.0 + 1e-6
    # n_i proportional to c_i^(-2/3): minimises the sum of 1/sqrt(n_i) at this cost (Lagrange)
    assert n["corruption"] / n["adversarial"] == pytest.approx(50 ** (2 / 3), rel=0.02)
    assert n["shift"] / n["corruption"] == pytest.approx(2 ** (2 / 3), rel=0.02)
    # a cheap check capped at what is available leaves its time to the others
    capped = allocate(costs, 300.0, 2_000)
    assert capped["corruption"] == capped["shift"] == 2_000 and capped["adversarial"] == 300 - 60
    # too little time: every check gets the floor (30, or all there is)
    assert allocate(costs, 1.0, 500) == {k: 30 for k in costs}
    assert allocate(costs, 1.0, 12) == {k: 12 for k in costs}


def test_every_prefix_of_the_order_is_class_stratified_and_seeded():
    rng = np.random.default_rng(3)
    labels = rng.choice(4, size=400, p=[0.55, 0.25, 0.15, 0.05])
    rows = pd.DataFrame({"sample_id": np.arange(400) * 3, "label": labels})
    ids = order(rows, seed=1)
    assert sorted(ids) == sorted(rows["sample_id"]) and (order(rows, seed=1) == ids).all()
    assert not (order(rows, seed=2) == ids).all()
    by_id = dict(zip(rows["sample_id"], rows["label"]))
    share = np.bincount(labels, minlength=4) / len(labels)
    for n in (20, 50, 100, 250):
        counts = np.bincount([by_id[i] for i in ids[:n]], minlength=4)
        assert np.all(np.abs(counts - share * n) <= 2), (n, counts)


@pytest.mark.slow
def test_a_budgeted_audit_uses_nested_subsets_and_replays_from_its_plan(torchscript_path, digits_dir, tmp_path):
    opts = ["--checks", "adversarial,corruption,shift", "--attack-strength", "fast", "--norms", "linf",
            "--eps-linf", "2/255", "--corruptions", "fog", "--severities", "3", "--quiet"]
    out = tmp_path / "a"
    r = run_cli("run", torchscript_path, digits_dir, "--budget", "25", "--out", out, *opts)
    assert r.returncode == 0, r.stderr
    s = read_summary(out)
    plan = s["plan"]
    assert plan["source"] == "budget" and plan["available"] == s["data"]["n_samples"] == 300
    assert s["clean"]["n"] == 300  # the clean evaluation always covers every image
    images = {k: v["images"] for k, v in plan["checks"].items()}
    assert set(images) == {"adversarial", "corruption", "shift"} and all(30 <= v <= 300 for v in images.values())
    assert images["corruption"] >= images["adversarial"]  # cheaper per image: at least as many
    rows = pd.read_csv(out / "samples.csv", low_memory=False)
    ids = {c: set(rows.loc[rows["check"] == c, "sample_id"]) for c in images}
    assert {c: len(v) for c, v in ids.items()} == images
    assert ids["adversarial"] <= ids["corruption"]  # nested: the attacked images are among the corrupted ones
    assert all(v["half_width"] is not None and 0 < v["half_width"] < 0.5 for v in plan["checks"].values())
    html = (out / "report.html").read_text()
    assert 'id="plan"' in html and "--budget 25" in html
    saved = json.loads((out / "plan.json").read_text())
    assert saved["images"] == images and saved["seed"] == 0
    # the plan replays exactly: the same images per check and the same results
    again = tmp_path / "b"
    r = run_cli("run", torchscript_path, digits_dir, "--plan", out / "plan.json", "--out", again, *opts)
    assert r.returncode == 0, r.stderr
    s2 = read_summary(again)
    assert s2["plan"]["source"] == "file" and {k: v["images"] for k, v in s2["plan"]["checks"].items()} == images
    for check in images:
        assert s2[check] == s[check], check
    r = run_cli("run", torchscript_path, digits_dir, "--plan", out / "plan.json", "--budget", "10", "--out", again)
    assert r.returncode == 2 and "give one of --budget, --precision and --plan, not --budget and --plan" in r.stderr


def test_plan_file_errors_are_one_sentence(torchscript_path, digits_dir, tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text('{"images": {"adversarial": "many"}}')
    with pytest.raises(AuditError, match="has no 'images' table of whole numbers per check"):
        cnnaudit.audit(torchscript_path, digits_dir, plan=str(bad), checks=["shift"], limit=40)
    with pytest.raises(AuditError, match="does not exist"):
        cnnaudit.audit(torchscript_path, digits_dir, plan=str(tmp_path / "nope.json"), checks=["shift"], limit=40)
    # a plan from Python, and a check it does not name, which then covers every image
    bad.write_text('{"images": {"corruption": 35}}')
    r = cnnaudit.audit(torchscript_path, digits_dir, plan=str(bad), checks=["shift", "corruption"], limit=60,
                       corruption={"corruptions": ["fog"], "severities": [2]})
    assert r.summary["plan"]["checks"]["corruption"]["images"] == 35
    assert r.summary["plan"]["checks"]["shift"]["images"] == 60


def _wilson(k, n, z=1.959964):
    """Wilson's interval in closed form, vectorised (stats.wilson_ci is scipy's, one at a time)."""
    centre = (k + z * z / 2) / (n + z * z)
    half = z * np.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return centre - half, centre + half


def test_the_precision_rule_keeps_coverage_and_reaches_the_half_width():
    """--precision's two-stage rule (planning.precision_n): a pilot of 64 images sets n, and the interval is
    computed on all n (the pilot's included). Simulated 4,000 times at each true proportion: the 95%
    intervals cover it at least 94% of the time, and are at most the half-width asked for (to 5%) in at
    least 97% of the runs."""
    from cnnaudit.planning import precision_n
    rng = np.random.default_rng(0)
    for h in (0.02, 0.05):
        for p in (0.01, 0.05, 0.2, 0.5, 0.75, 0.97):
            k0 = rng.binomial(64, p, size=4000)
            n = np.array([max(64, precision_n([k / 64], 64, h)) for k in k0])
            k = k0 + rng.binomial(n - 64, p)
            lo, hi = _wilson(k, n)
            assert ((lo <= p) & (p <= hi)).mean() >= 0.94, (h, p)
            assert ((hi - lo) / 2 <= 1.05 * h).mean() >= 0.97, (h, p)
    assert precision_n([], 0, 0.02) == 2401  # no pilot: the worst case p = 1/2


@pytest.mark.slow
def test_precision_plans_the_smallest_samples_and_says_the_time(torchscript_path, digits_dir, tmp_path):
    r = run_cli("run", torchscript_path, digits_dir, "--precision", "0.1", "--checks", "corruption,shift",
                "--corruptions", "fog", "--severities", "2", "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert "--precision 0.1:" in r.stderr and "s in all" in r.stderr
    s = read_summary(tmp_path / "o")
    assert s["plan"]["source"] == "precision" and s["plan"]["precision"] == 0.1
    for name, c in s["plan"]["checks"].items():
        assert c["images"] < 300 and c["half_width"] <= 0.1 * 1.05, (name, c)

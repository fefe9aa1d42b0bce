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
            "--eps-linf", "2/255", "--corruptions", "fog", "--severities", "3"]
    out = tmp_path / "a"
    r = run_cli("run", torchscript_path, digits_dir, "--budget", "40", "--out", out, *opts)
    assert r.returncode == 0, r.stderr
    # progress says the time left against the budget, after each check too
    assert "s of the 40 s budget left" in r.stderr or "s over the 40 s budget" in r.stderr, r.stderr
    opts.append("--quiet")
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
    assert 'id="plan"' in html and "--budget 40" in html
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


def _plan(images: dict, cost: dict, available: int = 1000) -> dict:
    return {"source": "budget", "available": available, "images": images, "replanned": [],
            "calibration": {"seconds_per_image": cost, "seconds_per_run": {k: 0.0 for k in cost}}}


def test_replanning_rescales_the_checks_left_by_what_the_finished_ones_cost():
    """The calibration misjudged: adversarial took twice its prediction, so the checks after it are predicted
    at twice their calibrated cost and get fewer images; a check that ran as predicted changes nothing."""
    import time
    from cnnaudit.planning import allocate, replan
    cost = {"adversarial": 0.1, "corruption": 0.01, "shift": 0.01}
    plan = _plan({"adversarial": 200, "corruption": 800, "shift": 800}, cost)
    started = time.perf_counter() - 20.0  # 20 s into a 60 s budget: 37 s left after the 5% reserve
    slow = replan(plan, ["corruption", "shift"], {"adversarial": 40.0}, started, 60.0)
    assert slow["replanned"][0]["ratio"] == 2.0 and slow["images"]["adversarial"] == 200  # what ran stays
    want = allocate({"corruption": 0.02, "shift": 0.02}, 37.0, 1000)
    assert all(abs(slow["images"][k] - want[k]) <= 2 for k in want), (slow["images"], want)
    assert slow["images"]["corruption"] < 1000
    on_time = replan(plan, ["corruption", "shift"], {"adversarial": 20.0}, started, 60.0)
    assert on_time["replanned"][0]["ratio"] == 1.0 and on_time["images"]["corruption"] == 1000
    # a ratio far off is clipped to [1/4, 4]: one warm-up outlier does not starve the rest
    assert replan(plan, ["corruption", "shift"], {"adversarial": 400.0}, started, 60.0)["replanned"][0]["ratio"] == 4.0


def test_a_budget_the_audit_cannot_meet_is_refused_in_one_sentence(torchscript_path, digits_dir, tmp_path):
    """A budget spent before the plan (start-up and the clean evaluation, which a budget never cuts): exit 2
    with the budget that would do, not an audit that silently runs ten times over."""
    r = run_cli("run", torchscript_path, digits_dir, "--budget", "1", "--checks", "shift", "--out", tmp_path / "o")
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "--budget 1 s cannot be met here: start-up, loading and the clean evaluation of all 300 images" in line
    assert "give --budget" in line and "or more" in line and "Traceback" not in r.stderr


def test_compare_refuses_a_budget_it_could_not_pair(torchscript_path, digits_dir, tmp_path):
    r = run_cli("compare", torchscript_path, torchscript_path, digits_dir, "--budget", "60", "--out", tmp_path / "c")
    assert r.returncode == 2 and "give its plan.json to compare with --plan" in r.stderr.strip().splitlines()[-1]


def test_a_rule_a_sample_cannot_decide_has_no_evidence(torchscript_path, digits_dir):
    """min_robust_accuracy on a check the plan gave a subset: a threshold inside the 95% interval is
    undecided (on_insufficient: fail by default, warn, pass) and becomes a finding; on every image, or with
    the threshold outside the interval, the rule is judged as ever."""
    from cnnaudit.gate import judge
    from cnnaudit.gate.judge import undecided_findings
    from cnnaudit.gate.policy import parse_policy
    adv = {"results": [{"norm": "linf", "attack": "worst_case", "eps": 2 / 255, "eps_label": "2/255", "n": 40,
                        "robust_accuracy": 0.55, "robust_accuracy_ci": [0.40, 0.69]}],
           "gradient_masking": "none"}
    summary = {"adversarial": adv, "findings": [],
               "plan": {"checks": {"adversarial": {"images": 40, "available": 300}}}}

    def rules(**extra):
        return parse_policy({"rule": [{"kind": "min_robust_accuracy", "norm": "linf", "eps": "2/255",
                                       "threshold": 0.5, **extra}]})

    (r,) = judge(rules(), summary)["rules"]
    assert not r["passed"] and r["undecided"]["images"] == 40 and "cannot decide" in r["detail"]
    assert "0.4000-0.6900 holds the threshold" in r["detail"]
    (w,) = judge(rules(on_insufficient="warn"), summary)["rules"]
    assert not w["passed"] and w["severity"] == "warn"
    (ok,) = judge(rules(on_insufficient="pass"), summary)["rules"]
    assert ok["passed"] and ok["undecided"]
    (decided,) = judge(rules(threshold=0.3), summary)["rules"]  # the whole interval is above it
    assert decided["passed"] and "undecided" not in decided
    every = {**summary, "plan": {"checks": {"adversarial": {"images": 300, "available": 300}}}}
    (ever,) = judge(rules(), every)["rules"]
    assert ever["passed"] and "undecided" not in ever
    gate = judge(rules(), summary)
    (f,), (cause,) = undecided_findings(gate, {"findings": [], "root_causes": []})
    assert cause == {"id": f["id"], "title": f["title"], "severity": "fail", "findings": [f["id"]], "n_images": None}
    assert (f["kind"], f["check"], f["evidence"], f["id"]) == ("undecided", "adversarial", "#plan",
                                                               "adversarial/undecided/min_robust_accuracy-1")
    with pytest.raises(AuditError, match="on_insufficient = 'maybe' should be one of fail, warn, pass"):
        rules(on_insufficient="maybe")


def test_under_a_budget_the_dearest_planned_check_runs_last_that_its_readers_allow():
    """cheapest_first: by predicted seconds, within what requires/after allow: the attacks after the cheap
    checks (so what those misjudged is measured before the attacks are sized), the subgroup check, which
    reads every check's outcomes, still after all of them."""
    from cnnaudit.planning import cheapest_first
    names = ["adversarial", "corruption", "shift", "subgroups", "shortcuts", "label_issues"]
    plan = _plan({"adversarial": 100, "corruption": 1000, "shift": 1000, "shortcuts": 200, "label_issues": 1000},
                 {"adversarial": 0.5, "corruption": 0.01, "shift": 0.02, "subgroups": 0.001, "shortcuts": 0.1,
                  "label_issues": 0.005})
    order = cheapest_first(names, plan)
    assert sorted(order) == sorted(names)
    assert order.index("adversarial") > max(order.index(n) for n in ("corruption", "shift", "shortcuts",
                                                                        "label_issues"))
    assert order[-1] == "subgroups" and order[0] == "label_issues"

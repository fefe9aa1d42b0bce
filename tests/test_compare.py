"""Release comparison (`cnnaudit compare`, `cnnaudit.compare`): paired per image, so a model and its
logit-scaled twin differ nowhere, and a copy with one class damaged regresses on that class, with its
regressed samples listed."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnaudit
from cnnaudit.comparison import compare_results
from cnnaudit.gate import judge
from cnnaudit.gate.policy import parse_policy
from tests.conftest import read_summary, run_cli
from tests.zoo import Forced, Scaled, adversarially_trained

SETTINGS = {"limit": 150, "checks": ["adversarial", "corruption"],
            "adversarial": {"norms": ("linf",), "eps": {"linf": [0.1]}},
            "corruption": {"corruptions": ("low_light",), "severities": (1, 5)}}


def _damaged(model, label: int = 9, by: float = 6.0):
    """A copy whose last layer's bias for `label` is lowered: that class is predicted far less often."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.classifier[-1].bias[label] -= by
    return out


def test_a_logit_scaled_twin_changes_nothing(eager_model, digits_dir):
    c = cnnaudit.compare(eager_model, Scaled(eager_model, 1e4), digits_dir, **SETTINGS).comparison
    assert c["conditions"] and c["n_significant"] == 0, [r for r in c["conditions"] if r["significant"]]
    clean = next(r for r in c["conditions"] if r["check"] == "clean")
    assert clean["n_improved"] == clean["n_regressed"] == 0 and clean["delta"] == 0  # the same decisions
    checks = {r["check"] for r in c["conditions"]}
    assert {"clean", "adversarial", "corruption", "class", "subgroups"} <= checks


@pytest.mark.slow
def test_an_adversarially_trained_model_improves_at_a_mid_budget(eager_model, digits, digits_dir):
    x, y, _ = digits
    robust = adversarially_trained(x[:1000], y[:1000], eps=0.1)
    c = cnnaudit.compare(eager_model, robust, digits_dir, limit=300, checks=["adversarial"],
                         adversarial={"norms": ("linf",), "eps": {"linf": [0.03, 0.1, 0.2]}}).comparison
    mid = next(r for r in c["conditions"] if r["check"] == "adversarial" and r["condition"] == "adv_linf_0.1")
    assert mid["significant"] and mid["delta"] > 0.08 and mid["n_improved"] > 3 * mid["n_regressed"], mid
    assert mid in c["improvements"] and mid["delta_ci"][0] > 0
    clean = next(r for r in c["conditions"] if r["check"] == "clean")
    assert not (clean["significant"] and clean["delta"] < 0)  # bought without a significant clean cost here


def test_a_damaged_class_regresses_with_its_samples(eager_model, digits_dir):
    c = cnnaudit.compare(eager_model, _damaged(eager_model), digits_dir, limit=300, checks=[]).comparison
    nine = next(r for r in c["conditions"] if (r["check"], r["condition"]) == ("class", "9"))
    assert nine["significant"] and nine["delta"] < -0.3 and nine["n_regressed"] > 10 and nine["n_improved"] == 0
    assert nine in c["regressions"] and not c["improvements"]
    lo, hi = nine["delta_ci"]
    assert lo <= nine["delta"] <= hi < 0
    # others are untouched or gain a little (samples the model used to call 9); none regress significantly
    assert all(r["condition"] in ("9", "clean") or r["check"] not in ("class", "clean") or not
               (r["significant"] and r["delta"] < 0) for r in c["conditions"])
    assert c["gallery"] and all(g["label"] == "9" and g["baseline"] == "9" and g["candidate"] != "9"
                                for g in c["gallery"])
    assert all(r["p_adjusted"] >= r["p_value"] for r in c["conditions"])


@pytest.mark.slow
def test_the_command_line(eager_model, digits_dir, tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.jit.save(torch.jit.script(eager_model), str(a))
    torch.jit.save(torch.jit.script(_damaged(eager_model)), str(b))
    out = tmp_path / "out"
    r = run_cli("compare", a, b, digits_dir, "--out", out, "--checks", "corruption", "--corruptions", "low_light",
                "--severities", "5", "--limit", "200")
    assert r.returncode == 0, r.stderr
    assert "significant regression(s)" in r.stdout and "class 9:" in r.stdout
    c = json.loads((out / "comparison.json").read_text())
    assert set(c) >= {"baseline", "candidate", "conditions", "findings", "gallery"}
    assert c["baseline"]["sha256"] != c["candidate"]["sha256"]
    assert read_summary(out / "baseline")["clean"]["accuracy"] > read_summary(out / "candidate")["clean"]["accuracy"]
    assert c["version"] == "1.0" and c["baseline"]["clean_accuracy"] > c["candidate"]["clean_accuracy"]
    nine = next(g for g in c["galleries"] if (g["check"], g["condition"]) == ("class", "9"))
    assert nine["significant"] and nine["samples"] and all(s["label"] == "9" for s in nine["samples"])
    assert {g["check"] for g in c["galleries"]} >= {"clean", "class", "subgroups"}  # per metadata group too
    html = (out / "report.html").read_text()
    assert "cnnaudit comparison" in html and "Regressed samples" in html and "class · 9" in html
    shown = sum(len(g["samples"]) for g in c["galleries"] if not g["same_as"])
    assert html.count('<img src="data:image/png;base64,') == shown  # every regressed sample with its thumbnail
    assert 'href="baseline/report.html"' in html and 'href="candidate/report.html"' in html
    # --policy applies to the candidate
    policy = tmp_path / "p.toml"
    policy.write_text('[[rule]]\nkind = "min_clean_accuracy"\nthreshold = 0.99\n')
    r = run_cli("compare", a, b, digits_dir, "--out", tmp_path / "o2", "--checks", "none", "--limit", "100",
                "--policy", policy, "--quiet")
    assert r.returncode == 1 and read_summary(tmp_path / "o2" / "candidate")["gate"]["passed"] is False
    # the shipped example policy: its paired rule fails the damaged class, with JUnit out
    example = Path(__file__).resolve().parents[1] / "examples" / "compare-gate.toml"
    r = run_cli("compare", a, b, digits_dir, "--out", tmp_path / "o3", "--checks", "none", "--limit", "200",
                "--policy", example, "--junit", tmp_path / "junit.xml", "--quiet")
    gate = json.loads((tmp_path / "o3" / "comparison.json").read_text())["gate"]
    paired = next(g for g in gate["rules"] if g["name"] == "no significant regression anywhere")
    assert r.returncode == 1 and not paired["passed"] and "class 9" in paired["detail"]
    assert "no significant regression anywhere" in (tmp_path / "junit.xml").read_text()
    # the same policy on a model compared with itself passes
    r = run_cli("compare", a, a, digits_dir, "--out", tmp_path / "o4", "--checks", "none", "--limit", "100",
                "--policy", example, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("bad", [["--checks", "nonsense"]])
def test_bad_input_is_one_line(eager_model, digits_dir, tmp_path, bad):
    a = tmp_path / "a.pt"
    torch.jit.save(torch.jit.script(eager_model), str(a))
    r = run_cli("compare", a, a, digits_dir, "--out", tmp_path / "o", *bad)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def _forced(model, digits, positions):
    """`model`, answering the next class on the listed images of digits_dir (positions 0-299)."""
    x, y, _ = digits
    idx = 1000 + np.asarray(positions, dtype=int)
    return Forced(model, torch.floor(x[idx] * 255 + 0.5) / 255, [(int(y[i]) + 1) % 10 for i in idx])


PAIRED = """
[[rule]]
name = "paired"
kind = "max_regression"
paired = true
only_significant = true
threshold = 0.02

[[rule]]
name = "unpaired"
kind = "max_regression"
metric = "clean.accuracy"
threshold = 0.02
"""


def test_the_paired_rule_fails_a_significant_regression_and_passes_noise_of_the_same_size(
        eager_model, digits, digits_dir, tmp_path):
    x, y, _ = digits
    with torch.no_grad():
        right = np.flatnonzero(eager_model(x[1000:1300]).argmax(1).numpy() == y[1000:1300])
    right = np.random.default_rng(0).permutation(right)
    s0, s1, s2 = right[:40], right[40:95], right[95:110]
    base = cnnaudit.audit(_forced(eager_model, digits, s0), digits_dir, checks=[])
    # noise: 40 images improve and 55 regress (-5 points); real: 15 regress and none improve (-5 points)
    noise = compare_results(base, cnnaudit.audit(_forced(eager_model, digits, s1), digits_dir, checks=[]))
    real = compare_results(base, cnnaudit.audit(_forced(eager_model, digits, np.r_[s0, s2]), digits_dir, checks=[]))
    clean = {name: next(r for r in c.comparison["conditions"] if r["check"] == "clean")
             for name, c in (("noise", noise), ("real", real))}
    assert clean["noise"]["delta"] == clean["real"]["delta"] == -0.05
    assert (clean["noise"]["n_improved"], clean["noise"]["n_regressed"]) == (40, 55)
    assert (clean["real"]["n_improved"], clean["real"]["n_regressed"]) == (0, 15)
    assert not clean["noise"]["significant"] and clean["real"]["significant"]

    rules = parse_policy({"rule": tomllib.loads(PAIRED)["rule"]})
    on_noise = {r["name"]: r for r in judge(rules, noise.candidate.summary, base.summary, noise.comparison)["rules"]}
    on_real = {r["name"]: r for r in judge(rules, real.candidate.summary, base.summary, real.comparison)["rules"]}
    assert on_noise["paired"]["passed"] and not on_noise["unpaired"]["passed"]  # the unpaired rule cannot tell
    assert not on_real["paired"]["passed"] and not on_real["unpaired"]["passed"]
    assert on_real["paired"]["value"] >= 0.05 and "clean clean -5.0 points" in on_real["paired"]["detail"]

    # the same through `cnnaudit gate --comparison` on the written outputs
    policy = tmp_path / "paired.toml"
    policy.write_text(PAIRED.split("[[rule]]\nname = \"unpaired\"")[0])
    for name, c, code in (("noise", noise, 0), ("real", real, 1)):
        c.write(tmp_path / name)
        r = run_cli("gate", tmp_path / name / "candidate" / "summary.json", "--policy", policy,
                    "--comparison", tmp_path / name / "comparison.json")
        assert r.returncode == code, (name, r.stdout, r.stderr)


def test_a_paired_rule_needs_a_comparison(eager_model, digits_dir, torchscript_path, tmp_path):
    policy = tmp_path / "paired.toml"
    policy.write_text('[[rule]]\nkind = "max_regression"\npaired = true\nthreshold = 0.02\n')
    r = run_cli("run", torchscript_path, digits_dir, "--out", tmp_path / "o", "--policy", policy, "--checks", "none")
    assert r.returncode == 2 and "cnnaudit compare" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()  # refused before any model work
    policy.write_text('[[rule]]\nkind = "max_regression"\npaired = true\nmetric = "clean.accuracy"\nthreshold = 0\n')
    r = run_cli("gate", tmp_path / "nothing.json", "--policy", policy)
    assert r.returncode == 2 and "not metric" in r.stderr
    policy.write_text('[[rule]]\nkind = "max_regression"\nonly_significant = true\nmetric = "clean.accuracy"\n'
                      'threshold = 0\n')
    r = run_cli("gate", tmp_path / "nothing.json", "--policy", policy)
    assert r.returncode == 2 and "paired = true" in r.stderr

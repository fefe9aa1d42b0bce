"""Release comparison (`cnnaudit compare`, `cnnaudit.compare`): paired per image, so a model and its
logit-scaled twin differ nowhere, and a copy with one class damaged regresses on that class, with its
regressed samples listed."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import cnnaudit
from tests.conftest import read_summary, run_cli
from tests.zoo import Scaled

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
    html = (out / "report.html").read_text()
    assert "cnnaudit comparison" in html and "Regressed samples" in html
    # --policy applies to the candidate
    policy = tmp_path / "p.toml"
    policy.write_text('[[rule]]\nkind = "min_clean_accuracy"\nthreshold = 0.99\n')
    r = run_cli("compare", a, b, digits_dir, "--out", tmp_path / "o2", "--checks", "none", "--limit", "100",
                "--policy", policy, "--quiet")
    assert r.returncode == 1 and read_summary(tmp_path / "o2" / "candidate")["gate"]["passed"] is False


@pytest.mark.parametrize("bad", [["--checks", "nonsense"]])
def test_bad_input_is_one_line(eager_model, digits_dir, tmp_path, bad):
    a = tmp_path / "a.pt"
    torch.jit.save(torch.jit.script(eager_model), str(a))
    r = run_cli("compare", a, a, digits_dir, "--out", tmp_path / "o", *bad)
    assert r.returncode == 2 and r.stderr.count("\n") == 1

"""Structured, ranked findings: a real weak class leads them; the ranking rule; the published schema; the
gate, JUnit, Markdown and `cnnaudit diff` read them."""

from __future__ import annotations

import json
import subprocess
import sys
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pytest

import cnnaudit
from cnnaudit.checks import CheckResult
from cnnaudit.demo import train_model, write_image_folder
from cnnaudit.findings import Finding, rank
from cnnaudit.gate import judge
from cnnaudit.gate.metrics import diff_findings
from cnnaudit.gate.outputs import junit_xml, markdown
from cnnaudit.gate.policy import parse_policy
from cnnaudit.schema import summary_schema, validate
from tests.conftest import CLASSES, run_cli


@pytest.fixture(scope="module")
def nines_trained_away(digits, tmp_path_factory):
    """A digits CNN trained with 70% of its nines labelled 8 (a class mislabeled away), audited on 300
    held-out digits with their true labels, clean and under low light."""
    x, y, meta = digits
    labels = y[:1000].copy()
    nines = np.flatnonzero(labels == 9)
    labels[nines[np.random.default_rng(1).random(len(nines)) < 0.7]] = 8
    model = train_model(x[:1000], labels, epochs=3)
    root = tmp_path_factory.mktemp("nines") / "data"
    idx = np.arange(1000, 1300)
    write_image_folder(root, x[idx], y[idx], meta.iloc[idx].reset_index(drop=True), CLASSES)
    return cnnaudit.audit(model, root, checks=["corruption"], corruption={"corruptions": ("low_light",)})


def test_the_weak_class_and_its_confusion_lead(nines_trained_away):
    s = nines_trained_away.summary
    validate(s)
    first, second = s["findings"][:2]
    assert (first["kind"], first["subject"], first["severity"]) == ("weak_class", "9", "fail"), first
    assert (second["kind"], second["subject"]) == ("confusion", "9→8"), second
    nine = next(r for r in s["clean"]["weak_classes"] if r["class"] == "9")
    assert first["effect"] == pytest.approx(nine["gap"]) and nine["recall"] < 0.3 and first["p_adjusted"] < 1e-6
    assert first["ci"][0] > 0.5 and first["evidence"] == "#clean-per-class"
    # its examples are real nines read as eights, most confident first
    rows = nines_trained_away.samples.query("check == 'clean'").set_index("sample_id")
    assert second["sample_ids"] and all(rows.loc[i, "label_name"] == "9" and rows.loc[i, "prediction_name"] == "8"
                                        for i in second["sample_ids"])
    # the report leads with them, with their thumbnails
    html = nines_trained_away.html()
    where = html[html.index('<section id="where">'):html.index('<section id="data">')]
    assert where.index("Class &#39;9&#39; is recognised") < where.index("read as &#39;8&#39;")
    assert where.count('<img src="data:image/png;base64,') >= len(second["sample_ids"])


def test_no_weak_class_is_claimed_without_evidence(eager_model, digits_dir):
    """The digits CNN's classes differ by chance only: nothing Holm-significant is a weak_class finding."""
    s = cnnaudit.audit(eager_model, digits_dir, checks=[]).summary
    weak = [f for f in s["findings"] if f["kind"] == "weak_class"]
    significant = [r for r in s["clean"]["weak_classes"] if r["p_adjusted"] < 0.05 and r["gap"] > 0]
    assert len(weak) == len(significant)
    assert all(r["p_adjusted"] >= r["p_value"] for r in s["clean"]["weak_classes"])


def test_ranking_rule():
    f = lambda sev, effect, p=None, ci=None, subject="s": Finding(sev, "c", "note", subject, "t", effect=effect,  # noqa: E731
                                                                   p_adjusted=p, ci=ci).as_dict()
    ranked = rank([f("info", 0.9), f("warn", 0.5, p=0.2), f("warn", 0.1, p=0.01), f("fail", 0.2, ci=[0.1, 0.3]),
                   f("fail", 0.4, ci=[-0.1, 0.9]), f("fail", 0.3, ci=[0.2, 0.4])])
    # severity; then supported (p < 0.05 or ci above 0) before not; then effect
    assert [(r["severity"], r["effect"]) for r in ranked] == [("fail", 0.3), ("fail", 0.2), ("fail", 0.4),
                                                              ("warn", 0.1), ("warn", 0.5), ("info", 0.9)]
    with pytest.raises(ValueError, match="severity"):
        Finding("critical", "c", "note", "s", "t")


def test_schema_is_published_and_strict_about_findings(nines_trained_away):
    schema = summary_schema()
    assert schema["$defs"]["finding"]["additionalProperties"] is False
    bad = json.loads(json.dumps(nines_trained_away.summary))
    bad["findings"][0]["severity"] = "critical"
    with pytest.raises(Exception, match="critical"):
        validate(bad)
    printed = subprocess.run([sys.executable, "-m", "cnnaudit.schema"], capture_output=True, text=True, check=True)
    assert json.loads(printed.stdout) == schema


def test_gate_junit_markdown_and_diff_read_findings(nines_trained_away, tmp_path):
    s = nines_trained_away.summary
    n_fail = sum(f["severity"] == "fail" for f in s["findings"])
    rules = parse_policy({"rule": [
        {"name": "no failures", "kind": "max_findings"},
        {"name": "no weak class", "kind": "max_findings", "kinds": ["weak_class"], "severity": "warn"},
        {"name": "a few warnings", "kind": "max_findings", "severity_at_least": "warn", "threshold": 100}]})
    gate = judge(rules, s)
    assert [r["passed"] for r in gate["rules"]] == [False, False, True] and not gate["passed"]
    assert gate["rules"][0]["value"] == n_fail and gate["n_warnings"] == 1
    suite = ET.fromstring(junit_xml(gate, findings=s["findings"])).find("testsuite")
    assert "[fail] clean/weak_class/9: Class '9' is recognised" in suite.find("system-out").text
    md = markdown(gate, s)
    assert "**Where it fails**" in md and "1. ❌ Class '9' is recognised" in md
    # diff: against itself nothing is new; against a summary without the weak class, it is new
    assert diff_findings(s, s) == {"new": [], "resolved": []}
    older = {**s, "findings": [f for f in s["findings"] if f["kind"] != "weak_class"]}
    changes = diff_findings(older, s)
    assert {f["subject"] for f in changes["new"]} == {f["subject"] for f in s["findings"] if f["kind"] == "weak_class"}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(older))
    b.write_text(json.dumps(s))
    out = run_cli("diff", a, b, "--json")
    assert out.returncode == 0, out.stderr
    assert [f["subject"] for f in json.loads(out.stdout)["findings"]["new"]] == [f["subject"] for f in changes["new"]]
    assert "new finding: [fail] clean/weak_class/9: Class '9' is recognised" in run_cli("diff", a, b).stdout


def test_a_plugin_sentence_becomes_a_note(nines_trained_away):
    """A check written for 0.3 returns sentences: they rank as `note` findings under its name; the 0.3
    shape of summary.findings stays one release as finding_sentences."""
    result = CheckResult("example_plugin", pd.DataFrame(), {}, findings=["A warm cast flips 30% of predictions."])
    assert result.findings == [Finding("warn", "example_plugin", "note", "example_plugin",
                                       "A warm cast flips 30% of predictions.").as_dict()]
    s = nines_trained_away.summary
    assert s["finding_sentences"] == [f["title"] + (f": {f['detail']}" if f["detail"] else "") for f in s["findings"]]


def test_the_paired_interval_matches_a_published_example_and_covers():
    """Newcombe's paired interval (stats.newcombe_paired_ci), used for corruption cliffs and comparisons:
    the example of the R package contingencytables (Cavo et al. 2012: 59, 6, 16, 80 gives -0.0621,
    95% CI -0.1186 to -0.0046), and its coverage on simulated paired outcomes."""
    import numpy as np
    from cnnaudit.stats import newcombe_paired_ci
    assert newcombe_paired_ci(59, 6, 16, 80) == pytest.approx([-0.1186, -0.0046], abs=6e-5)
    assert newcombe_paired_ci(100, 0, 0, 0)[0] < 0 < newcombe_paired_ci(100, 0, 0, 0)[1]  # never [0, 0]
    rng = np.random.default_rng(0)
    cells = np.array([0.70, 0.12, 0.04, 0.14])  # both right, first only, second only, neither
    truth, hits = cells[1] - cells[2], 0
    for _ in range(2000):
        lo, hi = newcombe_paired_ci(*rng.multinomial(80, cells))
        hits += lo <= truth <= hi
    assert 0.93 <= hits / 2000 <= 0.98, hits / 2000

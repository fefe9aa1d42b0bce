"""The CLI as users and CI call it: real subprocesses, real files, exit codes, the HTML itself."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

import pandas as pd
import pytest

from cnnaudit import __version__
from cnnaudit.report.explorer import SCRIPT

from .conftest import read_summary, run_cli

XSS = "<img src=x onerror=alert(1)>"


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"cnnaudit {__version__}"


@pytest.mark.slow
def test_run_end_to_end(tmp_path, torchscript_path, digits_dir):
    out = tmp_path / "out"
    r = run_cli("run", torchscript_path, digits_dir, "--out", out, "--seed", "3", "--eps-linf", "0.1,8/255",
                "--eps-l2", "1.5")
    assert r.returncode == 0, r.stderr
    assert "report:" in r.stdout and str(out / "report.html") in r.stdout
    s = read_summary(out)
    assert list(s)[:5] == ["version", "seed", "config", "model", "data"]
    assert {"path", "sha256", "format", "num_classes", "input_shape"} <= set(s["model"])
    assert {"path", "n_samples", "n_skipped", "skipped", "classes"} <= set(s["data"])
    assert {"accuracy", "accuracy_ci", "per_class", "confusion_matrix", "ece"} <= set(s["clean"])
    assert s["seed"] == 3 and s["data"]["n_samples"] == 300 and "timing" in s
    all_rows = pd.read_csv(out / "samples.csv")
    # clean, 3 budgets, 3 corruptions x 5 severities, shift, properties, label issues
    assert len(all_rows) == 300 * (1 + 3 + 15 + 1 + 1 + 1)
    assert sorted({(r["norm"], r["eps"]) for r in s["adversarial"]["results"]}) == [
        ("l2", 1.5), ("linf", 8 / 255), ("linf", 0.1)]
    samples = all_rows[all_rows["condition"] == "clean"]
    assert len(samples) == 300
    assert list(samples.columns[:4]) == ["sample_id", "path", "label", "label_name"]
    assert {"scanner", "ruler", "condition", "prediction", "correct", "confidence", "loss"} <= set(samples.columns)
    # every aggregate is derived from the rows
    assert s["clean"]["accuracy"] == pytest.approx(samples["correct"].mean(), abs=1e-6)
    cm = s["clean"]["confusion_matrix"]
    assert sum(map(sum, cm)) == 300 and sum(cm[i][i] for i in range(10)) == samples["correct"].sum()
    lo, hi = s["clean"]["accuracy_ci"]
    assert lo < s["clean"]["accuracy"] < hi
    assert s["clean"]["per_class"]["3"]["n"] == (samples["label"] == 3).sum()
    html = (out / "report.html").read_text()
    assert "Clean performance" in html and "Confusion matrix" in html and "Adversarial robustness" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html


@pytest.mark.slow
def test_bad_input_exits_2_with_one_line(tmp_path, torchscript_path, digits_dir):
    cases = [
        ("run", tmp_path / "missing.pt", digits_dir),
        ("run", torchscript_path, tmp_path / "nodata"),
        ("run", torchscript_path, digits_dir, "--checks", "nonsense"),
        ("run", torchscript_path, digits_dir, "--limit", "0"),
        ("run", torchscript_path, digits_dir, "--device", "tpu"),
        ("run", torchscript_path, digits_dir, "--eps-linf", "8/two"),
        ("run", torchscript_path, digits_dir, "--norms", "l3"),
    ]
    for args in cases:
        r = run_cli(*args, "--out", tmp_path / "o")
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr
        error_lines = [line for line in r.stderr.splitlines() if line.startswith("cnnaudit: error:")]
        assert len(error_lines) == 1, r.stderr
    assert not (tmp_path / "o" / "report.html").exists()


def test_usage_error_exits_2():
    r = run_cli("run")
    assert r.returncode == 2 and "usage:" in r.stderr


@pytest.mark.slow
def test_two_runs_give_identical_summaries(tmp_path, torchscript_path, digits_dir):
    summaries = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        r = run_cli("run", torchscript_path, digits_dir, "--out", out, "--limit", "120", "--quiet",
                    "--norms", "linf", "--eps-linf", "0.05,0.1")
        assert r.returncode == 0, r.stderr
        s = read_summary(out)
        s.pop("timing")
        summaries.append(s)
    assert json.dumps(summaries[0], sort_keys=True) == json.dumps(summaries[1], sort_keys=True)
    assert (tmp_path / "run0" / "samples.csv").read_bytes() == (tmp_path / "run1" / "samples.csv").read_bytes()
    assert summaries[0]["data"]["n_samples"] == 120


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text, self.scripts = [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.scripts += tag == "script"

    def handle_data(self, data):
        self.text.append(data)


def test_untrusted_class_names_are_escaped(tmp_path, torchscript_path, digits_dir):
    root = tmp_path / "xss"
    shutil.copytree(digits_dir, root)
    (root / "3").rename(root / XSS)
    classes = (root / "classes.txt").read_text().replace("3\n", XSS + "\n")
    (root / "classes.txt").write_text(classes)
    meta = pd.read_csv(root / "metadata.csv")
    meta["path"] = meta["path"].str.replace(r"^3/", XSS + "/", regex=True)
    meta["scanner"] = meta["scanner"].where(meta.index != 0, "<script>alert(2)</script>")
    meta.to_csv(root / "metadata.csv", index=False)
    out = tmp_path / "out"
    r = run_cli("run", torchscript_path, root, "--out", out, "--quiet", "--norms", "linf", "--eps-linf", "0.3")
    assert r.returncode == 0, r.stderr
    html = (out / "report.html").read_text()
    parser = _Collector()
    parser.feed(html)
    # one script, the explorer's own (allowed by its hash); the metadata's <script> is text
    assert parser.scripts == 1 and html.count("<script>" + SCRIPT + "</script>") == 1
    assert "<script>alert(2)" not in html and "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert not [t for t, a in parser.tags if any(k.startswith("on") for k in a)]
    assert not [a for t, a in parser.tags if t == "img" and a.get("src") == "x"]
    assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert any(XSS in t for t in parser.text)  # shown to the reader as text
    summary = read_summary(out)
    assert XSS in summary["data"]["classes"]
    assert any(c["class"] == XSS for c in summary["adversarial"]["per_class"])  # shown in the adversarial table

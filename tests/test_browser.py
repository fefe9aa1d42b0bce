"""The report in a real browser (headless Chromium over the DevTools protocol): no console errors, no
network requests, every section present, a screenshot kept as a test artifact, and a class named
`<img src=x onerror=alert(1)>` shown as text without running anything."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cnnaudit.report.explorer import SCRIPT

from .browser import Page, find_chromium
from .conftest import run_cli

XSS = "<img src=x onerror=alert(1)>"
ARTIFACTS = Path(os.environ.get("CNNAUDIT_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
FRAME = (["verdict", "where", "data"], ["explorer", "timing"])  # the report's own sections around the checks'


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        if os.environ.get("CNNAUDIT_REQUIRE_BROWSER", "0") not in ("", "0"):  # 0 or unset: skip without one
            pytest.fail("CNNAUDIT_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium).")
        pytest.skip("no chromium on this machine (.ci/run installs it)")
    return path


def test_report_in_headless_chromium(chromium, tmp_path, torchscript_path, digits_dir):
    root = tmp_path / "data"
    shutil.copytree(digits_dir, root)
    (root / "3").rename(root / XSS)
    (root / "classes.txt").write_text((root / "classes.txt").read_text().replace("3\n", XSS + "\n"))
    meta = pd.read_csv(root / "metadata.csv")
    meta["path"] = meta["path"].str.replace(r"^3/", XSS + "/", regex=True)
    meta.to_csv(root / "metadata.csv", index=False)
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nname = "clean accuracy"\nkind = "min_clean_accuracy"\nthreshold = 0.5\n\n'
                      '[[rule]]\nname = "no shortcut"\nkind = "no_shortcut"\nseverity = "warn"\n')
    out = tmp_path / "out"
    r = run_cli("run", torchscript_path, root, "--out", out, "--limit", "80", "--quiet", "--eps-linf", "0.1",
                "--eps-l2", "1", "--corruptions", "rain,low_light", "--severities", "1,5", "--artifact", "ruler",
                "--policy", policy)
    assert r.returncode == 0, r.stderr
    report = (out / "report.html").resolve()
    page = Page(chromium)
    try:
        page.open(report.as_uri())
        found = json.loads(page.evaluate(
            "JSON.stringify({ids: [...document.querySelectorAll('section[id]')].map(s => s.id),"
            " imgX: document.querySelectorAll('img[src=\"x\"]').length,"
            " scripts: [...document.querySelectorAll('script')].map(s => s.textContent),"
            " text: document.body.innerText.includes(" + json.dumps(XSS) + "),"
            " rules: document.querySelectorAll('#gate-rules tr').length,"
            " images: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length})"))
        # the explorer's filter (its inline script runs: its hash is in the CSP) shows exactly the rows of a class
        explorer = json.loads(page.evaluate(
            "JSON.stringify({hidden: document.getElementById('explorer-filter').hidden,"
            " rows: [...document.querySelectorAll('#explorer tbody tr')].map(r => r.dataset.class)})"))
        page.evaluate("(function(){var s = document.querySelector('#explorer-filter select[name=class]');"
                      " s.value = '9'; s.dispatchEvent(new Event('change', {bubbles: true})); return 1;})()")
        filtered = json.loads(page.evaluate(
            "JSON.stringify({shown: document.getElementById('explorer-shown').textContent,"
            " visible: [...document.querySelectorAll('#explorer tbody tr')].filter(r => !r.hidden)"
            ".map(r => r.dataset.class)})"))
        where = json.loads(page.evaluate(
            "JSON.stringify([...document.querySelectorAll('#where ol.where > li')].map(li => li.innerText.slice(0, 80)))"))
        causes = json.loads(page.evaluate(
            "JSON.stringify([...document.querySelectorAll('#where ol.causes > li > details')].map(d => d.open))"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(ARTIFACTS / "report.png")
        page.evaluate("document.getElementById('explorer').scrollIntoView()")
        page.screenshot(ARTIFACTS / "explorer.png")
        errors, requests, dialogs = page.console_errors(), page.requests(), page.dialogs()
    finally:
        page.close()
    assert not errors, errors
    assert not dialogs, dialogs  # alert(1) never ran
    outside = [u for u in requests if not u.startswith("data:") and u != report.as_uri()]
    assert not outside, outside  # the report is self-contained
    from cnnaudit.checks import registry
    summary = json.loads((out / "summary.json").read_text())
    ran = [name for name in registry() if name in summary]  # every check that ran, in registry order
    assert len(ran) >= 7 and found["ids"] == [*FRAME[0], *ran, *FRAME[1]], found["ids"]
    assert found["imgX"] == 0 and found["text"]  # the class name is text
    assert found["scripts"] == [SCRIPT]  # the explorer's, allowed by its hash; nothing else can run
    assert found["rules"] == 3 and found["images"] > 20  # header + 2 rules; thumbnails decoded
    assert (ARTIFACTS / "report.png").stat().st_size > 50_000
    # "Where it fails" lists the root causes, those that fail open, each holding its ranked findings; the
    # explorer's filter finds the expected rows
    samples = pd.read_csv(out / "samples.csv")
    assert len(where) == len(summary["findings"]) > 0
    assert causes == [c["severity"] == "fail" for c in summary["root_causes"]]
    assert explorer["hidden"] is False and len(explorer["rows"]) > 0
    nines = [c for c in explorer["rows"] if c == "9"]
    clean = samples[samples["check"] == "clean"]
    clean_nine_errors = clean[(clean["label_name"].astype(str) == "9") & (clean["correct"].astype(str) == "False")]
    assert filtered["visible"] == nines and filtered["shown"] == str(len(nines)) and len(nines) >= len(clean_nine_errors)


def test_the_browser_probe_sees_what_it_must_reject(chromium, tmp_path):
    """The probe is not blind: a page that logs an error, alerts and fetches from the network is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><img src='http://127.0.0.1:9/x.png'>"
                   "<script>console.error('boom'); alert('hi');</script></body></html>")
    page = Page(chromium)
    try:
        page.open(bad.resolve().as_uri())
        errors, requests = page.console_errors(), page.requests()
        dialogs = page.dialogs()
    finally:
        page.close()
    assert any("boom" in e for e in errors), errors
    assert any(u.startswith("http://127.0.0.1:9/") for u in requests), requests
    assert dialogs == ["hi"], dialogs

"""Checks declare themselves: the registry, its run order, third-party checks by entry point, and one
contract every registered check (the example plugin included) must meet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import cnnaudit
from cnnaudit.checks import Check, CheckResult, register, registry, run_order
from cnnaudit.errors import AuditError
from cnnaudit.resume import Checkpoints
from tests.conftest import read_summary, run_cli

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "plugin-check"
sys.path.insert(0, str(PLUGIN))
from cnnaudit_example_plugin import ColourCastCheck  # noqa: E402

register(ColourCastCheck)  # in this process; the CLI test below finds it through its entry point
BUILT_IN = ["clean", "adversarial", "corruption", "subgroups", "shortcuts"]
SMALL = {"adversarial": {"eps": {"linf": [0.1]}, "norms": ("linf",)},
         "corruption": {"corruptions": ["low_light"], "severities": [3]}}
STANDARD_COLUMNS = {"sample_id", "path", "label", "label_name", "check", "condition"}


def test_built_in_checks_register_in_order():
    assert list(registry())[:5] == BUILT_IN
    assert run_order(["shortcuts", "adversarial"]) == ["clean", "adversarial", "shortcuts"]
    # subgroups reads adversarial and corruption rows when they run: they go first whatever the order asked
    assert run_order(["subgroups", "corruption"]) == ["clean", "corruption", "subgroups"]


def test_a_check_must_declare_itself():
    with pytest.raises(TypeError, match="does not declare title, template"):
        class Incomplete(Check):  # noqa: F841
            name = "incomplete"

            def run(self, ctx, inputs):
                return None


def test_requirements_are_added_and_cycles_refused():
    class NeedsAdversarial(Check):
        name, title, template = "needs_adv", "Needs adversarial", "sections/failed.html.j2"
        requires = ("clean", "adversarial")

        def run(self, ctx, inputs):
            return CheckResult(self.name, pd.DataFrame(), {"saw": sorted(inputs)})

    class A(Check):
        name, title, template, requires = "cyc_a", "A", "x", ("cyc_b",)

        def run(self, ctx, inputs):
            return None

    class B(Check):
        name, title, template, requires = "cyc_b", "B", "x", ("cyc_a",)

        def run(self, ctx, inputs):
            return None

    reg = registry()
    try:
        for cls in (NeedsAdversarial, A, B):
            register(cls)
        assert run_order(["needs_adv"]) == ["clean", "adversarial", "needs_adv"]
        with pytest.raises(AuditError, match="cycle"):
            run_order(["cyc_a"])
        with pytest.raises(AuditError, match="not a check"):
            run_order(["nope"])
    finally:
        for name in ("needs_adv", "cyc_a", "cyc_b"):
            reg.pop(name, None)


@pytest.fixture(scope="module")
def audits(eager_model, digits_dir):
    """One audit per registered check (with what it requires), on 40 digits."""
    out = {}
    for name in [n for n in registry() if n != "clean"] + ["clean"]:
        checks = [] if name == "clean" else [name]
        out[name] = cnnaudit.audit(eager_model, digits_dir, checks=checks, limit=40,
                                   options={k: v for k, v in SMALL.items() if k in checks})
    return out


@pytest.mark.parametrize("name", BUILT_IN + ["example_plugin"])
def test_contract(name, audits, tmp_path):
    result = audits[name]
    mine = next(r for r in result.results if r.name == name)
    assert not mine.summary.get("failed"), mine.summary
    # tidy rows: the standard columns, this check's name, only audited samples
    assert STANDARD_COLUMNS <= set(mine.rows.columns), STANDARD_COLUMNS - set(mine.rows.columns)
    assert (mine.rows["check"] == name).all()
    assert set(mine.rows["sample_id"]) <= set(result.samples.query("check == 'clean'")["sample_id"])
    # the section is plain JSON in the summary, findings are sentences
    assert json.loads(json.dumps(result.summary[name])) == result.summary[name]
    assert all(isinstance(f, str) and f for f in mine.findings)
    # the template renders under StrictUndefined (render_report's environment) with the section in it
    assert f'<section id="{name}">' in result.html()
    # its gate metrics (if any) are named after it and are numbers
    from cnnaudit.gate.metrics import catalog
    assert all(isinstance(v, (int, float)) for k, v in catalog(result.summary).items() if k.startswith(name + "."))
    # what the check returns survives a checkpoint round trip unchanged
    cp = Checkpoints(tmp_path, model_sha256="m", data="d", config={})
    cp.save(name, "k" * 40, mine)
    back = cp.load(name, "k" * 40)
    pd.testing.assert_frame_equal(back.rows.reset_index(drop=True), mine.rows.reset_index(drop=True),
                                  check_dtype=False)
    assert back.summary == json.loads(json.dumps(mine.summary)) and back.findings == mine.findings
    assert json.dumps(back.outputs, sort_keys=True, default=str) == json.dumps(mine.outputs, sort_keys=True,
                                                                                default=str)


def test_plugin_installs_and_runs_from_the_command_line(tmp_path, torchscript_path, digits_dir):
    """pip installs examples/plugin-check (its own pyproject, entry point group cnnaudit.checks); the real CLI
    then runs `--checks example_plugin` and puts its section in the report and the summary."""
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--target", str(target), str(PLUGIN)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    out = tmp_path / "out"
    env = {"PYTHONPATH": f"{target}:{ROOT}"}
    res = run_cli("run", torchscript_path, digits_dir, "--out", out, "--checks", "example_plugin", "--limit", "40",
                  env=env)
    assert res.returncode == 0, res.stderr
    s = read_summary(out)
    assert [c["cast"] for c in s["example_plugin"]["casts"]] == ["warm", "cool"]
    assert all(0 <= c["flip_rate"] <= 1 for c in s["example_plugin"]["casts"])
    assert "Colour cast (example plugin)" in (out / "report.html").read_text()
    diff = run_cli("diff", out / "summary.json", out / "summary.json", env=env)
    assert diff.returncode == 0 and "example_plugin.flip_rate.warm" in diff.stdout, diff.stderr
    listed = run_cli("run", "--help", env=env)
    assert "example_plugin" in listed.stdout

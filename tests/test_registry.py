"""Checks declare themselves: the registry, its run order, third-party checks by entry point, and one
contract every registered check (the example plugin included) must meet."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

import cnnaudit
from cnnaudit.checks import Check, CheckResult, register, registry, run_order
from cnnaudit.errors import AuditError
from cnnaudit.resume import Checkpoints
from cnnaudit.cli import _declared_flags, build_parser
from cnnaudit.config import AuditConfig
from cnnaudit.options import specs, validate as validate_options
from cnnaudit.schema import validate
from tests.conftest import PLUGIN, read_summary, run_cli

sys.path.insert(0, str(PLUGIN))
from cnnaudit_example_plugin import ColourCastCheck  # noqa: E402

register(ColourCastCheck)  # in this process; the CLI test below finds it through its entry point
BUILT_IN = ["clean", "adversarial", "corruption", "shift", "subgroups", "shortcuts", "label_issues", "training"]
SMALL = {"adversarial": {"eps": {"linf": [0.1]}, "norms": ("linf",)},
         "corruption": {"corruptions": ["low_light"], "severities": [3]}}
STANDARD_COLUMNS = {"sample_id", "path", "label", "label_name", "check", "condition"}
# checks whose summary is more than aggregates of their rows (summarize() not declared): the subgroups
# check's group tables come from the clean rows and metadata, the shortcuts check's verdicts from rows plus
# the annotation counts; both are tested against their own numbers in test_subgroups / test_shortcuts
# the shortcuts check's verdicts from rows plus the annotation counts, the training check's from the training
# set; each is tested against its own numbers in test_subgroups / test_shortcuts / test_training
NOT_ROW_DERIVED = {"subgroups", "shortcuts", "training"}


def test_built_in_checks_register_in_order():
    assert list(registry())[:len(BUILT_IN)] == BUILT_IN
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
                                   train_data=digits_dir if name == "training" else None,
                                   **{k: v for k, v in SMALL.items() if k in checks})
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
    # findings are records matching the published schema (the whole summary is validated with them)
    validate(result.summary)
    assert all(f["check"] == name for f in mine.findings)
    # the template renders under StrictUndefined (render_report's environment) with the section in it
    assert f'<section id="{name}">' in result.html()
    # its gate metrics (if any) are named after it and are numbers
    from cnnaudit.gate.metrics import catalog
    assert all(isinstance(v, (int, float)) for k, v in catalog(result.summary).items() if k.startswith(name + "."))
    # its summary's aggregates are derivable from the rows: recomputed from them, they are the same
    check = registry()[name]
    opts = check.options_from(AuditConfig(options={k: v for k, v in SMALL.items() if k == name}))
    derived = check(opts).summarize(mine.rows, {r.name: r for r in result.results}, result.summary["data"]["classes"],
                                    result.summary["data"]["attributes"])
    assert (derived is None) == (name in NOT_ROW_DERIVED), name
    for key, value in (derived or {}).items():
        assert json.loads(json.dumps(value)) == result.summary[name][key], key
    # what the check returns survives a checkpoint round trip unchanged
    cp = Checkpoints(tmp_path, model_sha256="m", data="d", config={})
    cp.save(name, "k" * 40, mine)
    back = cp.load(name, "k" * 40)
    pd.testing.assert_frame_equal(back.rows.reset_index(drop=True), mine.rows.reset_index(drop=True),
                                  check_dtype=False)
    assert back.summary == json.loads(json.dumps(mine.summary)) and back.findings == mine.findings
    assert json.dumps(back.outputs, sort_keys=True, default=str) == json.dumps(mine.outputs, sort_keys=True,
                                                                                default=str)


@pytest.mark.parametrize("name", BUILT_IN + ["example_plugin"])
def test_options_and_rules_are_declared(name):
    """Every option has help text and validates its own default; every flag is generated into `run` and
    `demo`, once; rule kinds have unique names."""
    check = registry()[name]
    if check.options_type is not None:
        declared = specs(check.options_type)
        assert declared and all(spec.help for spec in declared.values()), name
        assert validate_options(name, check.options_type, {}) == validate_options(name, check.options_type,
                                                                                   check.options_type())
    flags = [flag for c, _, _, flag, _ in _declared_flags()]
    assert len(flags) == len(set(flags)), "two options share a flag"
    parser = build_parser()
    for sub in ("run", "demo"):
        strings = {s for a in parser._subparsers._group_actions[0].choices[sub]._actions for s in a.option_strings}
        assert set(flags) <= strings
    kinds = [k.name for c in registry().values() for k in c.rule_kinds]
    assert len(kinds) == len(set(kinds)) and all(callable(k.judge) for k in check.rule_kinds)


def test_errors_name_the_option_in_python_and_the_flag_on_the_command_line(eager_model, digits_dir, torchscript_path):
    with pytest.raises(AuditError, match="the corruption option 'severities' has 9: choose from 1, 2, 3, 4, 5"):
        cnnaudit.audit(eager_model, digits_dir, checks=["corruption"], corruption={"severities": (1, 9)})
    with pytest.raises(AuditError, match="the shortcuts option 'artifacts' has 'rular': not a metadata column"):
        cnnaudit.audit(eager_model, digits_dir, checks=["shortcuts"], shortcuts={"artifacts": ("rular",)})
    for args, message in ((["--severities", "1,9"], "--severities has 9: choose from 1, 2, 3, 4, 5."),
                          (["--eps-l2", "1,x"], "--eps-l2 has 'x': give a number or fraction like 8/255."),
                          (["--artifact", "rular"], "--artifact has 'rular': not a metadata column"),
                          (["--min-group-size", "0"], "--min-group-size has 0: the smallest allowed is 1.")):
        r = run_cli("run", torchscript_path, digits_dir, "--out", "unused", *args)
        assert r.returncode == 2 and r.stderr.startswith(f"cnnaudit: error: {message}"), r.stderr


@pytest.mark.slow
def test_plugin_installs_and_runs_from_the_command_line(tmp_path, torchscript_path, digits_dir, plugin_env):
    """pip installs examples/plugin-check (its own pyproject, entry point group cnnaudit.checks); the real CLI
    then runs `--checks example_plugin` and puts its section in the report and the summary; its generated
    flag, its metrics and its gate rule kind work like a built-in check's."""
    out, env = tmp_path / "out", plugin_env
    res = run_cli("run", torchscript_path, digits_dir, "--out", out, "--checks", "example_plugin", "--limit", "40",
                  "--colour-casts", "cool,warm", env=env)
    assert res.returncode == 0, res.stderr
    s = read_summary(out)
    assert [c["cast"] for c in s["example_plugin"]["casts"]] == ["cool", "warm"]
    assert all(0 <= c["flip_rate"] <= 1 for c in s["example_plugin"]["casts"])
    assert "Colour cast (example plugin)" in (out / "report.html").read_text()
    diff = run_cli("diff", out / "summary.json", out / "summary.json", env=env)
    assert diff.returncode == 0 and "example_plugin.flip_rate.warm" in diff.stdout, diff.stderr
    listed = run_cli("run", "--help", env=env)
    assert "example_plugin" in listed.stdout and "--colour-casts" in listed.stdout
    bad = run_cli("run", torchscript_path, digits_dir, "--out", out, "--colour-casts", "red", env=env)
    assert bad.returncode == 2 and "--colour-casts has 'red': choose from warm, cool" in bad.stderr, bad.stderr
    worst = max(c["flip_rate"] for c in s["example_plugin"]["casts"])
    for threshold, code in ((1.0, 0), (0.0, 1 if worst > 0 else 0)):
        policy = tmp_path / "gate.toml"
        policy.write_text(f'[[rule]]\nkind = "max_colour_cast_flip"\nthreshold = {threshold}\n')
        gate = run_cli("gate", out / "summary.json", "--policy", policy, env=env)
        assert gate.returncode == code, (threshold, gate.stdout, gate.stderr)
    # and its judgement both ways, on a section with a known flip rate (in this process)
    from cnnaudit.gate import judge
    from cnnaudit.gate.policy import parse_policy
    section = {"example_plugin": {"casts": [{"cast": "warm", "flip_rate": 0.3}, {"cast": "cool", "flip_rate": 0.1}]}}
    for threshold, passed in ((0.35, True), (0.25, False)):
        rules = parse_policy({"rule": [{"kind": "max_colour_cast_flip", "threshold": threshold}]})
        verdict = judge(rules, section)["rules"][0]
        assert verdict["passed"] is passed and verdict["metric"] == "example_plugin.flip_rate.warm"

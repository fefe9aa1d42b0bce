"""Checks declare themselves: the registry, its run order, third-party checks by entry point, and one
contract every registered check (the example plugin included) must meet."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import TypedDict

import pandas as pd
import pytest

import cnnaudit
from cnnaudit.checks import Check, CheckResult, register, registry, run_order
from cnnaudit.errors import AuditError
from cnnaudit.cli import _declared_flags, build_parser
from cnnaudit.options import specs, validate as validate_options
from cnnaudit.testing import parametrize_with_checks
from tests.conftest import PLUGIN, read_summary, run_cli

sys.path.insert(0, str(PLUGIN))
from cnnaudit_example_plugin import ColourCastCheck  # noqa: E402

register(ColourCastCheck)  # in this process; the CLI test below finds it through its entry point
BUILT_IN = [name for name, check in registry().items() if check.__module__.startswith("cnnaudit.")]


def test_built_in_checks_register_in_order():
    assert BUILT_IN[0] == "clean" and list(registry())[:len(BUILT_IN)] == BUILT_IN and len(BUILT_IN) >= 8
    assert run_order(["shortcuts", "adversarial"]) == ["clean", "adversarial", "shortcuts"]
    # subgroups reads adversarial and corruption rows when they run: they go first whatever the order asked
    assert run_order(["subgroups", "corruption"]) == ["clean", "corruption", "subgroups"]


def test_a_check_must_declare_itself():
    with pytest.raises(TypeError, match="does not declare title, template"):
        class Incomplete(Check):  # noqa: F841
            name = "incomplete"

            def run(self, ctx, results):
                return None


def test_requirements_are_added_and_cycles_refused():
    class NeedsAdversarial(Check):
        name, title, template = "needs_adv", "Needs adversarial", "sections/failed.html.j2"
        requires = ("clean", "adversarial")

        def run(self, ctx, results):
            return CheckResult(self.name, pd.DataFrame(), {"saw": sorted(results)})

    class A(Check):
        name, title, template, requires = "cyc_a", "A", "x", ("cyc_b",)

        def run(self, ctx, results):
            return None

    class B(Check):
        name, title, template, requires = "cyc_b", "B", "x", ("cyc_a",)

        def run(self, ctx, results):
            return None

    class ReadsSubgroups(Check):  # has outcomes, yet reads subgroups: subgroups cannot read its outcomes first
        name, title, template, requires, outcomes = "reads_sub", "R", "x", ("clean", "subgroups"), ("correct",)

        def run(self, ctx, results):
            return None

    reg = registry()
    try:
        for cls in (NeedsAdversarial, A, B, ReadsSubgroups):
            register(cls)
        assert run_order(["needs_adv"]) == ["clean", "adversarial", "needs_adv"]
        assert run_order(["reads_sub", "shift"]) == ["clean", "shift", "subgroups", "reads_sub"]
        with pytest.raises(AuditError, match="cycle"):
            run_order(["cyc_a"])
        with pytest.raises(AuditError, match="not a check"):
            run_order(["nope"])
    finally:
        for name in ("needs_adv", "cyc_a", "cyc_b", "reads_sub"):
            reg.pop(name, None)


@parametrize_with_checks()  # every registered check (the example plugin's included) x every zoo model
def test_contract(case):
    case.run()


class InvertedCondition(TypedDict):
    condition: str
    accuracy: float


class InvertedSection(TypedDict):
    """The new check's section: accuracy per condition."""
    conditions: list[InvertedCondition]


class InvertedCheck(Check):
    """A check written here, declared like a plugin: each image inverted (1 - x) or darkened; it declares
    its per-image outcomes and its section type, and nothing else in cnnaudit names it."""
    name, title, template = "inverted", "Inverted images", "inverted.html.j2"
    template_dir = str(Path(__file__).parent / "data" / "templates")
    outcomes = ("correct",)
    section = InvertedSection

    @staticmethod
    def metrics(section):
        return {f"inverted.accuracy.{c['condition']}": c["accuracy"] for c in section["conditions"]}

    @staticmethod
    def incomparable(baseline, candidate):  # audits run with another inversion do not compare
        return "another inversion" if baseline.get("mode") != candidate.get("mode") else None

    def run(self, ctx, results):
        from cnnaudit.predict import predict

        def evaluate(batch):
            parts = []
            for condition, x in (("inverted", 1 - batch.x), ("dark", batch.x * 0.3)):
                parts.append(pd.DataFrame({"sample_id": batch.sample_ids, "condition": condition,
                                           **predict(ctx.model, x.to(ctx.device), batch.y.to(ctx.device))}))
            return pd.concat(parts, ignore_index=True)

        res = pd.concat(ctx.map_batches(evaluate, desc="inverted"), ignore_index=True)
        rows = ctx.base_rows(res["sample_id"]).assign(check=self.name)
        for col in ("condition", "prediction", "confidence", "correct"):
            rows[col] = res[col].to_numpy()
        rows["correct"] = rows["correct"].astype(bool)
        rows["prediction_name"] = [ctx.classes[int(p)] for p in rows["prediction"]]
        conditions = [{"condition": c, "accuracy": round(float(g["correct"].mean()), 6)}
                      for c, g in rows.groupby("condition", sort=False)]
        return CheckResult(self.name, rows, {"conditions": conditions})


def test_a_new_check_reaches_every_reader_by_declaration_alone(eager_model, digits_dir):
    """Registered, a new check with declared outcomes and section type is in the summary, the generated
    schema, the report, the sample explorer, robustness disparity, the paired comparison, the gate's
    metrics and the model card, and it meets the contract suite, without a line changed elsewhere."""
    from cnnaudit.comparison import compare_results
    from cnnaudit.gate.metrics import catalog
    from cnnaudit.report.explorer import explorer as explore
    from cnnaudit.schema import generate
    from cnnaudit.testing import cases
    reg = registry()
    register(InvertedCheck)
    try:
        result = cnnaudit.audit(eager_model, digits_dir, checks=["inverted", "subgroups"], limit=60, seed=0)
        s = result.summary
        assert [c["condition"] for c in s["inverted"]["conditions"]] == ["inverted", "dark"]
        assert s["inverted"]["conditions"][0]["accuracy"] < 0.5 < s["clean"]["accuracy"]  # inversion breaks it
        schema = generate(plugins=True)
        assert "inverted" in schema["properties"] and "inverted_section" in schema["$defs"]
        html = result.html()
        assert '<section id="inverted">' in html
        explorer = [r for r in explore(result.results, s)["rows"] if r["condition"] == "inverted"]
        assert explorer and all(r["prediction"] != r["label"] for r in explorer)  # images inversion broke
        disparity = {(d["check"], d["condition"], d["attribute"]) for d in s["subgroups"]["disparity"]}
        assert {("inverted", "inverted", "scanner"), ("inverted", "dark", "scanner")} <= disparity
        paired = compare_results(result, result).comparison["conditions"]
        assert {(r["check"], r["condition"]) for r in paired} >= {("inverted", "inverted"), ("inverted", "dark")}
        other = copy.copy(result)  # declared incomparable: compare leaves its conditions out, and the rest in
        other.summary = {**s, "inverted": {**s["inverted"], "mode": "other"}}
        apart = {r["check"] for r in compare_results(result, other).comparison["conditions"]}
        assert "inverted" not in apart and "clean" in apart
        assert catalog(s)["inverted.accuracy.dark"] == s["inverted"]["conditions"][1]["accuracy"]
        card = result.model_card()
        assert "### Inverted images" in card and "inverted.accuracy.inverted" in card
        for case in cases(["inverted"], models=["logits"]):
            case.run()
    finally:
        reg.pop("inverted", None)


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
    # the plugin's own contract suite (examples/plugin-check/tests, cnnaudit.testing), as its author runs it
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
                           capture_output=True, text=True, cwd=PLUGIN, env={**os.environ, **env}, timeout=900)
    assert suite.returncode == 0 and "5 passed" in suite.stdout, suite.stdout[-2000:] + suite.stderr[-2000:]
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

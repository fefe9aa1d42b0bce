"""The check contract as a public test suite, for cnnaudit's own checks and for plugin authors.

In the spirit of scikit-learn's `parametrize_with_checks`: every registered check (or the ones named) x
every model of a small zoo becomes its own test id, and each runs the same contract functions on a real
audit of that model (cached per model and process: the zoo's audits run once, whatever the number of
checks). A plugin's test module is three lines:

    from cnnaudit.testing import parametrize_with_checks

    @parametrize_with_checks(["my_check"])
    def test_my_check_meets_the_contract(case):
        case.run()

The zoo (`ZOO`) holds tiny real models trained in seconds on scikit-learn's handwritten digits, in the
shapes users bring: ten logits, one binary logit, probabilities, a dict output, and a Python function
audited query-only. Each contract function (`CONTRACTS`) takes (check class, ContractAudit) and raises
AssertionError naming what broke. Needs pytest and jsonschema (`pip install 'cnnaudit[testing]'`).
"""

from __future__ import annotations

import atexit
import copy
import functools
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from .checks import Check, registry
from .checks.base import CheckResult

STANDARD_COLUMNS = ("sample_id", "path", "label", "label_name", "check", "condition")
LIMIT = 40  # images per zoo audit: enough for every check to produce rows, small enough for CI
# options that keep each built-in check's cost down on the zoo (a plugin's checks run at their defaults)
SMALL = {"adversarial": {"eps": {"linf": [0.1]}, "norms": ("linf",)},
         "corruption": {"corruptions": ["low_light"], "severities": [3]},
         "shift": {"pixels": (1,)},
         "shortcuts": {"artifacts": ("ruler",)}}


# --- the zoo -----------------------------------------------------------------------------------------
class _Probabilities(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.softmax(self.inner(x), dim=1)


class _DictOutput(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return {"logits": self.inner(x)}


class _SingleLogit(nn.Module):
    """A binary head with one logit (BCE style) for the second class."""

    def __init__(self, two: nn.Module):
        super().__init__()
        self.two = two

    def forward(self, x):
        z = self.two(x)
        return z[:, 1] - z[:, 0]


@functools.lru_cache(maxsize=None)
def _digits():
    from .demo import digits_images
    return digits_images(seed=0)


@functools.lru_cache(maxsize=None)
def _trained(classes: int):
    from .demo import DigitsCNN, train_model
    x, y, _ = _digits()
    labels = y[:1000] if classes == 10 else (y[:1000] >= 5).astype(np.int64)
    return train_model(x[:1000], labels, epochs=3, model=DigitsCNN(num_classes=classes))


@functools.lru_cache(maxsize=None)
def _folder(classes: int) -> Path:
    """300 held-out digits as DATA/<class>/<image>.png with metadata.csv (a ruler and a scanner column)."""
    from .demo import write_image_folder
    x, y, meta = _digits()
    idx = np.arange(1000, 1300)
    names = [str(i) for i in range(10)] if classes == 10 else ["low", "high"]
    labels = y[idx] if classes == 10 else (y[idx] >= 5).astype(np.int64)
    folder = tempfile.mkdtemp(prefix="cnnaudit-zoo-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    root = Path(folder) / "data"
    write_image_folder(root, x[idx], labels, meta.iloc[idx].reset_index(drop=True), names)
    return root


def _function_model():
    model = _trained(10)

    def scores(batch: np.ndarray) -> np.ndarray:  # a Python function: audited query-only
        with torch.no_grad():
            return model(torch.from_numpy(batch)).numpy()
    return scores


@dataclass(frozen=True)
class ZooModel:
    name: str
    build: Callable[[], object]  # the model cnnaudit.audit() takes
    classes: int  # 10 (digits) or 2 (digits below 5 vs the rest)
    query_only: bool = False


ZOO = {z.name: z for z in (
    ZooModel("logits", lambda: _trained(10), 10),
    ZooModel("single_logit", lambda: _SingleLogit(_trained(2)), 2),
    ZooModel("probabilities", lambda: _Probabilities(_trained(10)), 10),
    ZooModel("dict_logits", lambda: _DictOutput(_trained(10)), 10),
    ZooModel("function", _function_model, 10, query_only=True),
)}


# --- one audit per zoo model --------------------------------------------------------------------------
@dataclass
class ContractAudit:
    """A finished audit of one zoo model with the checks under test (and what they require)."""
    model: str
    result: object  # AuditResult
    options: dict

    def of(self, name: str) -> CheckResult:
        return next(r for r in self.result.results if r.name == name)


@functools.lru_cache(maxsize=None)
def audit_zoo_model(model: str, checks: tuple[str, ...]) -> ContractAudit:
    import cnnaudit
    zoo = ZOO[model]
    data = _folder(zoo.classes)
    from .checks import run_order
    options = {k: v for k, v in SMALL.items() if k in run_order(checks)}  # those the checks pull in too
    result = cnnaudit.audit(zoo.build(), data, checks=list(checks), limit=LIMIT, seed=0, train_data=data,
                            gallery_size=4, **options)
    return ContractAudit(model, result, options)


# --- the contract ---------------------------------------------------------------------------------------
def check_section_is_json(check: type[Check], audit: ContractAudit) -> None:
    """It ran, and its summary section is plain JSON (what summary.json holds)."""
    section = audit.result.summary.get(check.name)
    assert section is not None, f"the audit has no {check.name!r} section"
    assert not section.get("failed"), f"the check failed on this model: {section.get('error')}"
    assert json.loads(json.dumps(section)) == section, "the section does not survive a JSON round trip"


def check_section_matches_its_type(check: type[Check], audit: ContractAudit) -> None:
    """Its section matches the type it declares (Check.section, a TypedDict), and the whole summary the
    published schema."""
    import jsonschema
    from .schema import section_schema, validate
    if check.section is not None:
        jsonschema.validate(audit.result.summary[check.name], section_schema(check.section),
                            cls=jsonschema.Draft202012Validator)
    validate(audit.result.summary)


def check_rows_are_tidy(check: type[Check], audit: ContractAudit) -> None:
    """One row per sample and condition, with the standard columns, its own name, audited samples only."""
    rows = audit.of(check.name).rows
    missing = set(STANDARD_COLUMNS) - set(rows.columns)
    assert not missing, f"its rows lack the standard columns {sorted(missing)}"
    assert (rows["check"] == check.name).all(), "its rows carry another check's name"
    audited = set(audit.of("clean").rows["sample_id"])
    assert set(rows["sample_id"]) <= audited, "its rows name samples the audit did not read"
    assert not rows.duplicated(["sample_id", "condition"]).any() or not check.outcomes, \
        "a check with outcomes has two rows for one sample and condition"


def check_outcomes_are_declared(check: type[Check], audit: ContractAudit) -> None:
    """Each declared outcome column is boolean on every row, and its conditions reach the robustness
    disparity tables (when subgroups ran), the sample explorer and the paired comparison."""
    rows = audit.of(check.name).rows
    for column in check.outcomes:
        assert column in rows, f"it declares outcome {column!r}, which its rows lack"
        assert pd.api.types.is_bool_dtype(rows[column]), f"outcome {column!r} is {rows[column].dtype}, not bool"
    if check.outcomes:  # what the explorer and the comparison's galleries show of an image under a condition
        missing = {"prediction", "confidence"} - set(rows.columns)
        assert not missing, f"a check with outcomes needs the columns {sorted(missing)} in its rows"
    if not check.outcomes or check.name == "clean" or not len(rows):
        return
    from .checks.outcomes import outcome_rows
    conditions = {c for name, c, _ in outcome_rows(audit.result.results) if name == check.name}
    assert conditions, "its declared outcomes produce no condition"
    sub = audit.result.summary.get("subgroups") or {}
    if sub.get("attributes") and not sub.get("failed"):
        reached = {d["condition"] for d in sub["disparity"] if d["check"] == check.name}
        assert reached == conditions, f"disparity has {sorted(reached)} of its conditions {sorted(conditions)}"
    # against a candidate that gets every image of this check wrong: each condition is paired, and its
    # regressions reach the galleries
    from .comparison import compare_results
    candidate = copy.copy(audit.result)
    candidate.results = [copy.copy(r) for r in audit.result.results]
    for r in candidate.results:
        if r.name == check.name:
            r.rows = r.rows.assign(**{column: False for column in check.outcomes})
    c = compare_results(audit.result, candidate).comparison
    paired = {r["condition"] for r in c["conditions"] if r["check"] == check.name}
    assert paired == conditions, f"the comparison pairs {sorted(paired)} of its conditions {sorted(conditions)}"
    significant = {r["condition"] for r in c["conditions"]
                   if r["check"] == check.name and r["significant"] and r["delta"] < 0}
    shown = {g["condition"] for g in c["galleries"] if g["check"] == check.name}
    assert shown == significant, f"galleries for {sorted(shown)}, significant regressions {sorted(significant)}"
    assert all(g["samples"] for g in c["galleries"] if g["check"] == check.name), "an empty regression gallery"


def check_findings_are_records(check: type[Check], audit: ContractAudit) -> None:
    """Its findings are ranked records of its own, of the kinds it declares (or the generic ones)."""
    from .findings import GENERIC_KINDS
    kinds = {*GENERIC_KINDS, *check.finding_kinds}
    for f in audit.of(check.name).findings:
        assert f["check"] == check.name, f"finding {f['title']!r} names check {f['check']!r}"
        assert f["kind"] in kinds, f"finding kind {f['kind']!r} is not declared (finding_kinds: {sorted(kinds)})"


def check_report_renders(check: type[Check], audit: ContractAudit) -> None:
    """Its template renders its section (under StrictUndefined: a typo fails here), and the model card
    shows it."""
    html = audit.result.html()
    assert f'<section id="{check.name}">' in html, "the report has no section for it"
    from .report.model_card import has_own_part, parts
    card = audit.result.model_card()
    assert check.name == "clean" or check.name in [p["name"] for p in parts(audit.result.summary)], \
        "the model card leaves it out"
    if check.name != "clean" and not has_own_part(check.name):  # the generic part: its title and metrics
        from .markdown import MD_INLINE, escape
        assert f"### {escape(check.title, MD_INLINE)}" in card, "the model card's generic part does not show it"


def check_metrics_are_numbers(check: type[Check], audit: ContractAudit) -> None:
    """Its gate metrics are named `<check>.` and are numbers; its model-card metrics are {type, name, value}."""
    section = audit.result.summary[check.name]
    for key, value in check.metrics(section).items():
        assert key.startswith(check.name + "."), f"metric {key!r} is not named after the check"
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"metric {key!r} is {value!r}"
    for m in check.card_metrics(section):
        assert set(m) == {"type", "name", "value"} and isinstance(m["value"], (int, float)), m
    for subject, verdict in check.verdicts(section).items():
        assert isinstance(subject, str) and isinstance(verdict, str), (subject, verdict)


def check_summary_derives_from_rows(check: type[Check], audit: ContractAudit) -> None:
    """The aggregates it declares derivable (Check.summarize) are recomputed from its rows alone."""
    from .config import AuditConfig
    summary = audit.result.summary
    opts = check.options_from(AuditConfig(options={k: v for k, v in audit.options.items() if k == check.name}))
    results = {r.name: r for r in audit.result.results}
    derived = check(opts).summarize(audit.of(check.name).rows, results, summary["data"]["classes"],
                                    summary["data"]["attributes"])
    for key, value in (derived or {}).items():
        assert json.loads(json.dumps(value)) == summary[check.name][key], f"{key} differs when recomputed from rows"


def check_checkpoint_round_trip(check: type[Check], audit: ContractAudit) -> None:
    """What it returns survives --resume's checkpoint unchanged."""
    from .resume import Checkpoints
    mine = audit.of(check.name)
    with tempfile.TemporaryDirectory() as folder:
        cp = Checkpoints(Path(folder), model_sha256="m", data="d", config={})
        cp.save(check.name, "k" * 40, mine)
        back = cp.load(check.name, "k" * 40)
    pd.testing.assert_frame_equal(back.rows.reset_index(drop=True), mine.rows.reset_index(drop=True),
                                  check_dtype=False)
    assert back.summary == json.loads(json.dumps(mine.summary)) and back.findings == mine.findings
    assert json.dumps(back.outputs, sort_keys=True, default=str) == json.dumps(mine.outputs, sort_keys=True,
                                                                                default=str)


def check_options_are_declared(check: type[Check], audit: ContractAudit) -> None:
    """Every option has help text and validates its own default."""
    from .options import specs, validate
    if check.options_type is None:
        return
    declared = specs(check.options_type)
    assert declared and all(spec.help for spec in declared.values()), "an option has no help text"
    assert validate(check.name, check.options_type, {}) == validate(check.name, check.options_type,
                                                                    check.options_type())


CONTRACTS = (check_section_is_json, check_section_matches_its_type, check_rows_are_tidy,
             check_outcomes_are_declared, check_findings_are_records, check_report_renders,
             check_metrics_are_numbers, check_summary_derives_from_rows, check_checkpoint_round_trip,
             check_options_are_declared)


@dataclass(frozen=True)
class ContractCase:
    """One check on one zoo model: `run()` audits the model (once per process) and applies every contract."""
    check: str
    model: str
    checks: tuple[str, ...]  # the checks the model's audit runs (shared by the cases of one suite)

    @property
    def id(self) -> str:
        return f"{self.check}-{self.model}"

    def run(self) -> None:
        check = registry()[self.check]
        audit = audit_zoo_model(self.model, self.checks)
        failures = []
        for contract in CONTRACTS:
            try:
                contract(check, audit)
            except AssertionError as exc:
                failures.append(f"{contract.__name__}: {exc}")
        assert not failures, f"{self.check} on the {self.model} model:\n" + "\n".join(failures)


def cases(checks=None, models=None) -> list[ContractCase]:
    """Every (check, zoo model) pair: `checks` default to every registered check, `models` to the zoo."""
    reg = registry()
    # a check that needs multi-label data (the joint multilabel check) has no single-label zoo model to run on:
    # tests/test_multilabel.py audits it on a multi-label model
    names = [n for n in reg if "multilabel" not in reg[n].inputs] if checks is None else list(checks)
    unknown = [n for n in names if n not in reg]
    if unknown:
        raise ValueError(f"not registered checks: {', '.join(unknown)} (registered: {', '.join(reg)})")
    run = tuple(n for n in names if n != "clean")
    return [ContractCase(name, model, run) for name in names for model in (models or ZOO)]


def parametrize_with_checks(checks=None, models=None):
    """A pytest decorator: the test takes one argument, `case`, and calls `case.run()`; one test id per
    check and zoo model, like `adversarial-logits`."""
    import pytest
    found = cases(checks, models)
    return pytest.mark.parametrize("case", found, ids=[c.id for c in found])

"""Issue 27's edges of the run itself: OUT holds one complete audit or the previous one (a real SIGINT while
writing), every setting and every policy rule checked before any work, p-values written unrounded, and a
golden file that pins what was measured, not the bytes of a file trained on this machine."""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import pytest

import cnnaudit
from cnnaudit.bias.groups import gap, holm_verdicts
from cnnaudit.io import STAGE_DELAY_ENV, STAGING_PREFIX, OutputSet
from cnnaudit.options import OptionError
from tests.conftest import interrupt_at, read_summary, run_cli

FAST = ("--checks", "none", "--quiet")


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_an_interrupt_while_writing_leaves_the_previous_audit_whole(tmp_path, torchscript_path, digits_dir):
    """A second audit into the same OUT, interrupted by a real SIGINT after its files were staged and before
    they were renamed into place: OUT still holds the first audit, byte for byte, and no staging folder."""
    out = tmp_path / "out"
    first = run_cli("run", torchscript_path, digits_dir, "--out", out, "--limit", "40", *FAST)
    assert first.returncode == 0, first.stderr
    before = _files(out)
    assert {"samples.csv", "summary.json", "report.html"} <= set(before)
    cmd = [sys.executable, "-m", "cnnaudit", "run", str(torchscript_path), str(digits_dir), "--out", str(out),
           "--limit", "60", "--seed", "1", "--checks", "none"]
    assert interrupt_at(cmd, "outputs staged", env={STAGE_DELAY_ENV: "60"}) == 130
    assert _files(out) == before
    assert not list(out.glob(STAGING_PREFIX + "*"))
    assert read_summary(out)["data"]["n_selected"] == 40


def test_a_failure_while_staging_writes_nothing(tmp_path):
    """A writer that fails half-way through the set (a real exception while writing real files): the files
    staged before it never reach OUT, and the earlier audit's stay as they were."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"old": true}')
    (out / "samples.csv").write_text("old\n")

    def broken(f):
        f.write("half a report")
        raise ValueError("Out of range float values are not JSON compliant")

    with pytest.raises(ValueError):
        with OutputSet(out) as outputs:
            outputs.add_text("samples.csv", "new\n")
            outputs.add("report.html", broken)
            outputs.add_json("summary.json", {"new": True})
            outputs.commit()
    assert (out / "summary.json").read_text() == '{"old": true}' and (out / "samples.csv").read_text() == "old\n"
    assert not (out / "report.html").exists() and not list(out.glob(STAGING_PREFIX + "*"))


def test_a_staging_folder_of_a_killed_run_is_cleared(tmp_path):
    out = tmp_path / "out"
    abandoned = out / f"{STAGING_PREFIX}999999999-x"  # no process has this id
    abandoned.mkdir(parents=True)
    (abandoned / "summary.json").write_text("{}")
    with OutputSet(out) as outputs:
        outputs.add_text("summary.json", "{}\n")
        outputs.commit()
    assert not abandoned.exists() and (out / "summary.json").read_text() == "{}\n"


@pytest.mark.parametrize("flag, value, says", [
    ("--seed", "-5", "--seed has -5: the smallest allowed is 0"),
    ("--seed", "99999999999999999999", "--seed has 99999999999999999999: the largest allowed is 4294967295"),
    ("--batch-size", "0", "--batch-size has 0: the smallest allowed is 1"),
    ("--limit", "0", "--limit has 0: the smallest allowed is 1"),
    ("--workers", "0", "--workers has 0: the smallest allowed is 1"),
    ("--std", "0", "--std has 0.0: must be positive"),
    ("--device", "gpu", "--device has 'gpu': expected auto, cpu, cuda or cuda:N"),
])
def test_bad_settings_fail_before_any_work(tmp_path, torchscript_path, digits_dir, flag, value, says):
    """Each setting is validated up front: one sentence naming the flag, exit 2, before the model is
    loaded (--seed -5 used to crash after the clean pass)."""
    t = time.perf_counter()
    proc = run_cli("run", torchscript_path, digits_dir, "--out", tmp_path / "out", flag, value)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr and "auditing" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert time.perf_counter() - t < 60


def test_bad_settings_from_python_name_the_setting(torchscript_path, digits_dir):
    with pytest.raises(OptionError, match="the audit setting 'seed' has -5: the smallest allowed is 0"):
        cnnaudit.audit(torchscript_path, digits_dir, seed=-5, checks=[])
    with pytest.raises(OptionError, match="the audit setting 'limit' has 2.5"):
        cnnaudit.audit(torchscript_path, digits_dir, limit=2.5, checks=[])
    result = cnnaudit.audit(torchscript_path, digits_dir, seed=2**32 - 1, limit=20, checks=[])  # the largest works
    assert result.summary["seed"] == 2**32 - 1


@pytest.mark.parametrize("rule, says", [
    ('kind = "max_findings"\nkinds = ["weak-class"]', "kinds has 'weak-class', which is not a finding kind"),
    ('kind = "max_findings"\nseverity_at_least = "warning"', "severity_at_least = 'warning' should be"),
    ('kind = "max_findings"\nkinds = []', "kinds = [] counts no finding"),
    ('kind = "min_robust_accuracy"\nthreshold = 0.5\nnorm = "linf"\neps = "1/0"', "eps '1/0' in the policy"),
    ('kind = "min_robust_accuracy"\nthreshold = 0.5\nnorm = "l3"\neps = 0.1', "norm = 'l3' should be one of"),
    ('kind = "min_robust_accuracy"\nthreshold = 0.5\nnorm = "linf"\neps = 0.1\nattack = "pgd"',
     "attack = 'pgd' should be"),
])
def test_policy_typos_fail_when_the_policy_is_read(tmp_path, torchscript_path, digits_dir, rule, says):
    """Every rule kind, the gate's own included, is checked before any work: by `run` (no model loaded, no
    OUT written) and by `gate`, which plans nothing. A misspelt finding kind used to count nothing and pass."""
    policy = tmp_path / "gate.toml"
    policy.write_text(f"[[rule]]\n{rule}\n")
    proc = run_cli("run", torchscript_path, digits_dir, "--out", tmp_path / "out", "--policy", policy)
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "auditing" not in proc.stderr and not (tmp_path / "out").exists()


def test_gate_refuses_a_typo_in_a_finished_audits_policy(tmp_path, torchscript_path, digits_dir):
    out = tmp_path / "out"
    assert run_cli("run", torchscript_path, digits_dir, "--out", out, "--limit", "30", *FAST).returncode == 0
    policy = tmp_path / "gate.toml"
    policy.write_text('[[rule]]\nkind = "max_findings"\nkinds = ["weak-class"]\n')
    proc = run_cli("gate", out / "summary.json", "--policy", policy)
    assert proc.returncode == 2 and "not a finding kind" in proc.stderr
    policy.write_text('[[rule]]\nkind = "max_findings"\nkinds = ["weak_class"]\nthreshold = 100\n')
    assert run_cli("gate", out / "summary.json", "--policy", policy).returncode == 0


def test_a_regression_metric_the_baseline_lacks_fails_before_the_audit(tmp_path, torchscript_path, digits_dir):
    out = tmp_path / "old"
    assert run_cli("run", torchscript_path, digits_dir, "--out", out, "--limit", "30", *FAST).returncode == 0
    policy = tmp_path / "gate.toml"
    policy.write_text('[[rule]]\nkind = "max_regression"\nmetric = "clean.acuracy"\nthreshold = 0.01\n')
    proc = run_cli("run", torchscript_path, digits_dir, "--out", tmp_path / "new", "--policy", policy,
                   "--baseline", out / "summary.json")
    assert proc.returncode == 2 and "'clean.acuracy', which the baseline summary does not have" in proc.stderr
    assert "clean.accuracy" in proc.stderr and not (tmp_path / "new").exists()


def test_p_values_are_written_to_significant_digits_not_rounded_to_zero():
    """A Fisher p of about 1e-14 (and its Holm adjustment) is written as such: rounding to 6 decimals wrote
    0.0, which reads as 'impossible'."""
    groups = [{"value": "A", "n": 100, "accuracy": 0.95, "insufficient": False},
              {"value": "B", "n": 100, "accuracy": 0.45, "insufficient": False}]
    entry = gap(groups, seed=0)
    holm_verdicts([entry])
    assert 0 < entry["p_value"] < 1e-10 and 0 < entry["p_adjusted"] < 1e-10
    assert entry["p_value"] == float(f"{entry['p_value']:.6g}")
    assert json.loads(json.dumps(entry))["p_value"] > 0


def test_the_golden_comparison_ignores_the_bytes_of_the_trained_model():
    """The demo model's file differs in bytes between machines whose every metric agrees: the golden
    pins what was measured (tests/test_demo_golden.py: comparable)."""
    from tests.test_demo_golden import GOLDEN, comparable
    golden = json.loads(GOLDEN.read_text())
    here = copy.deepcopy(golden)
    here["model"].update(sha256="0" * 64, path="/somewhere/else/model.pt")
    assert comparable(here) == comparable(golden)
    here["clean"]["accuracy"] = golden["clean"]["accuracy"] - 0.01  # a measured number still counts
    assert comparable(here) != comparable(golden)

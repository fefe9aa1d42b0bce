"""The model card (`--model-card`) and the MLflow export (`--mlflow`): filled from the audit's results,
with the findings named, a Hugging Face model-index header that parses, and TODO where a person must
write; MLflow runs in a local file store (no server, no network)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from cnnaudit.report.model_card import _md
from tests.conftest import read_summary, run_cli

MITCHELL = ["Model details", "Intended use", "Factors", "Metrics", "Evaluation data", "Training data",
            "Quantitative analyses", "Ethical considerations", "Caveats and recommendations"]


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _damaged(model, label: int = 9, by: float = 6.0):
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.classifier[-1].bias[label] -= by
    return out


@pytest.fixture(scope="module")
def model_files(eager_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("card-models")
    a, b = root / "v1.pt", root / "v2.pt"
    torch.jit.save(torch.jit.script(eager_model), str(a))
    torch.jit.save(torch.jit.script(_damaged(eager_model)), str(b))
    return a, b


def test_the_card_names_the_findings_and_the_measured_numbers(model_files, digits_dir, tmp_path):
    card_path = tmp_path / "card" / "README.md"
    r = run_cli("run", model_files[1], digits_dir, "--out", tmp_path / "o", "--checks", "corruption,subgroups",
                "--corruptions", "low_light", "--severities", "5", "--limit", "200", "--model-card", card_path,
                "--quiet")
    assert r.returncode == 0, r.stderr
    s, card = read_summary(tmp_path / "o"), card_path.read_text()
    for section in MITCHELL:
        assert f"\n## {section}\n" in card
    assert card.count("**TODO**") >= 6  # developers, intended use, factors, data provenance, ethics, advice
    # every fail and warn finding is named, with its evidence
    named = [f for f in s["findings"] if f["severity"] in ("fail", "warn")]
    assert any(f["kind"] == "weak_class" and f["subject"] == "9" for f in named)  # the damaged class
    for f in named:
        assert _md(f["title"]) in card
    # the Hugging Face header parses and carries the measured numbers
    index = _front_matter(card)["model-index"][0]
    metrics = {m["type"]: m["value"] for m in index["results"][0]["metrics"]}
    assert index["name"] == "v2" and metrics["accuracy"] == s["clean"]["accuracy"]
    assert metrics["corruption_accuracy"] == s["corruption"]["mean"]["low_light"]
    assert f"{100 * s['clean']['accuracy']:.1f}%" in card and s["model"]["sha256"][:16] in card
    assert "| 9 |" in card  # the per-class table


def test_the_card_of_a_comparison_says_what_changed(model_files, digits_dir, tmp_path):
    card_path = tmp_path / "card.md"
    r = run_cli("compare", *model_files, digits_dir, "--out", tmp_path / "o", "--checks", "none", "--limit", "200",
                "--model-card", card_path, "--quiet")
    assert r.returncode == 0, r.stderr
    card = card_path.read_text()
    assert "## Changes since the baseline" in card and "- class 9:" in card and "improved, adjusted p" in card
    assert _front_matter(card)["model-index"][0]["name"] == "v2"  # the candidate's card


def test_hostile_names_stay_inert_markdown(eager_model, digits, tmp_path):
    from cnnaudit.demo import write_image_folder
    x, y, meta = digits
    idx = list(range(1000, 1100))
    classes = [f"<img src=x onerror=alert({i})> | [link](javascript:alert) *{i}*" for i in range(10)]
    root = tmp_path / "data"
    write_image_folder(root, x[idx], y[idx], meta.iloc[idx].reset_index(drop=True), classes)
    model = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(eager_model), str(model))
    r = run_cli("run", model, root, "--out", tmp_path / "o", "--checks", "none", "--model-card", tmp_path / "c.md",
                "--quiet")
    assert r.returncode == 0, r.stderr
    card = (tmp_path / "c.md").read_text()
    assert "<img" not in card and "[link](" not in card and "&lt;img" in card
    _front_matter(card)  # still valid YAML


@pytest.mark.slow
def test_mlflow_logs_metrics_and_artifacts_to_a_local_store(model_files, digits_dir, tmp_path, monkeypatch):
    import mlflow  # in the test extra
    store = (tmp_path / "mlruns").as_uri()
    # MLflow 3 refuses a file store unless asked: the local store without a server the tests use
    env = {"MLFLOW_TRACKING_URI": store, "MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_EXPERIMENT_NAME": "audits"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    r = run_cli("run", model_files[0], digits_dir, "--out", tmp_path / "o", "--checks", "corruption",
                "--corruptions", "low_light", "--severities", "5", "--limit", "100", "--mlflow",
                "--model-card", tmp_path / "card.md", env=env)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split("mlflow run: ")[1].split()[0]
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    run = client.get_run(run_id)
    s = read_summary(tmp_path / "o")
    assert run.data.metrics["clean.accuracy"] == s["clean"]["accuracy"]
    assert run.data.metrics["corruption.accuracy.low_light"] == s["corruption"]["mean"]["low_light"]
    assert run.data.params["model.sha256"] == s["model"]["sha256"]
    assert client.get_experiment(run.info.experiment_id).name == "audits"
    logged = {a.path for a in client.list_artifacts(run_id, "cnnaudit")}
    assert logged == {"cnnaudit/summary.json", "cnnaudit/report.html", "cnnaudit/card.md"}
    # a comparison logs its paired numbers into the candidate's run
    r = run_cli("compare", *model_files, digits_dir, "--out", tmp_path / "c", "--checks", "none", "--limit", "200",
                "--mlflow", env=env)
    assert r.returncode == 0, r.stderr
    run = client.get_run(r.stdout.split("mlflow run: ")[1].split()[0])
    c = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert run.data.metrics["paired.n_regressions"] == len(c["regressions"]) >= 1
    assert run.data.metrics["paired.delta.class.9"] < -0.3
    assert "cnnaudit/comparison.json" in {a.path for a in client.list_artifacts(run.info.run_id, "cnnaudit")}
    # a store MLflow refuses is one sentence naming it, after the outputs are written
    r = run_cli("run", model_files[0], digits_dir, "--out", tmp_path / "refused", "--checks", "none", "--limit", "50",
                "--mlflow", "--quiet", env={**env, "MLFLOW_ALLOW_FILE_STORE": "false"})
    assert r.returncode == 2 and "--mlflow could not log to" in r.stderr and r.stderr.count("\n") == 1
    assert (tmp_path / "refused" / "summary.json").is_file()


def test_mlflow_missing_is_one_line_before_any_work(torchscript_path, digits_dir, tmp_path):
    shadow = tmp_path / "shadow"  # a module named mlflow that cannot be imported: MLflow as if not installed
    shadow.mkdir()
    (shadow / "mlflow.py").write_text("raise ImportError('No module named mlflow')\n")
    r = run_cli("run", torchscript_path, digits_dir, "--out", tmp_path / "o", "--mlflow",
                env={"PYTHONPATH": str(shadow)})
    assert r.returncode == 2 and "cnnaudit[mlflow]" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()

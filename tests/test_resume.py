"""--resume: an interrupted audit continues with its finished checks, recomputes what changed, and ends
with the same summary as an uninterrupted run."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from .conftest import interrupt_at, read_summary, run_cli

ARGS = ["--checks", "adversarial,corruption", "--norms", "linf", "--eps-linf", "0.1,0.2", "--limit", "120",
        "--corruptions", "rain,snow,low_light,fog,motion_blur,gaussian_noise,jpeg,contrast,brightness"]


def strip(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "timing"}


@pytest.mark.slow
def test_resume_after_interrupt(tmp_path, torchscript_path, digits_dir):
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "cnnaudit", "run", str(torchscript_path), str(digits_dir), "--out", str(out),
           "--resume", *ARGS]
    assert interrupt_at(cmd, "corruption:") == 130
    assert not (out / "report.html").exists()
    r = run_cli("run", torchscript_path, digits_dir, "--out", out, "--resume", *ARGS)
    assert r.returncode == 0, r.stderr
    resumed = read_summary(out)
    assert resumed["timing"]["resumed"] == ["clean", "adversarial"]
    assert "reused from an earlier run" in r.stderr
    fresh = tmp_path / "fresh"
    r = run_cli("run", torchscript_path, digits_dir, "--out", fresh, *ARGS)
    assert r.returncode == 0, r.stderr
    assert strip(read_summary(fresh)) == strip(resumed)
    # a changed option recomputes that check (and the ones after it), a changed seed recomputes all
    r = run_cli("run", torchscript_path, digits_dir, "--out", out, "--resume", *ARGS[:-1], "rain")
    assert r.returncode == 0 and read_summary(out)["timing"]["resumed"] == ["clean", "adversarial"]
    assert read_summary(out)["corruption"]["corruptions"] == ["rain"]
    r = run_cli("run", torchscript_path, digits_dir, "--out", out, "--resume", "--seed", "5", *ARGS)
    assert r.returncode == 0 and read_summary(out)["timing"]["resumed"] == []


class _Planted:
    """What an attacker with write access to OUT would plant: unpickling it creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_checkpoints_never_run_code(tmp_path, torchscript_path, digits_dir):
    import pickle

    import numpy as np
    out = tmp_path / "o"
    args = ["--checks", "none", "--limit", "30", "--quiet"]
    assert run_cli("run", torchscript_path, digits_dir, "--out", out, "--resume", *args).returncode == 0
    folder = out / ".cnnaudit-checkpoints"
    (npz,) = folder.glob("clean-*.npz")
    assert not list(folder.glob("*.pkl"))  # checkpoints are JSON + npz, never pickles
    marker = tmp_path / "pwned"
    # an npz whose array is a pickled object, and a pickle where the old format kept its checkpoints
    np.savez(npz, rows_0=np.array([_Planted(str(marker))], dtype=object), allow_pickle=True)
    (folder / f"{npz.stem}.pkl").write_bytes(pickle.dumps(_Planted(str(marker))))
    r = run_cli("run", torchscript_path, digits_dir, "--out", out, "--resume", *args)
    assert r.returncode == 0, r.stderr
    assert not marker.exists()
    assert read_summary(out)["timing"]["resumed"] == []  # the damaged checkpoint was recomputed, not trusted


def test_a_changed_training_set_is_not_resumed(tmp_path, digits, torchscript_path):
    """The training check's checkpoint is keyed by the training files too: a training set changed under the
    same path (here an evaluation image copied into it, a new leak) is audited again, not reused."""
    import shutil

    from cnnaudit.demo import write_image_folder
    x, y, meta = digits
    classes = [str(i) for i in range(10)]
    train, evaluation = tmp_path / "train", tmp_path / "eval"
    write_image_folder(train, x[:200], y[:200], meta.iloc[:200].reset_index(drop=True), classes)
    write_image_folder(evaluation, x[1000:1100], y[1000:1100], meta.iloc[1000:1100].reset_index(drop=True), classes)
    out = tmp_path / "out"
    args = ["run", torchscript_path, evaluation, "--train-data", train, "--checks", "training", "--out", out,
            "--resume", "--quiet"]
    assert run_cli(*args).returncode == 0
    before = read_summary(out)["training"]["leakage_counts"]["n_eval_leaked"]
    assert run_cli(*args).returncode == 0 and read_summary(out)["timing"]["resumed"] == ["clean", "training"]
    leaked = pd.read_csv(evaluation / "metadata.csv")["path"][0]  # an evaluation image, into training
    target = pd.read_csv(train / "metadata.csv")["path"][0]
    shutil.copyfile(evaluation / leaked, train / target)
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    s = read_summary(out)
    assert "training" not in s["timing"]["resumed"]
    assert s["training"]["leakage_counts"]["n_eval_leaked"] == before + 1
